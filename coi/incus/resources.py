"""The verbs about what instances use: the server's record, profiles, networks and their
ACLs, storage pools and volumes, projects, cluster members and trust
(https://linuxcontainers.org/incus/docs/main/rest-api-spec/)."""

from __future__ import annotations

from typing import Any

from coi.incus.rest import Json, Rest


def _on(target: str) -> dict[str, Any]:
    """The query that scopes a request to one cluster member ('' or none: the one asked)."""
    return {"target": target} if target and target != "none" else {}


class Resources(Rest):
    """The server, profiles, networks, storage, projects and trust."""

    def server(self) -> Json:
        """GET /1.0: server config and environment."""
        info: Json = self.get("", "the server's record")
        return info

    # -- profiles -------------------------------------------------------------------------

    def profile(self, name: str) -> Json | None:
        """A profile's record, or None. Never cached: another process (`coi setup`,
        `doctor --fix`, incus itself) may change it at any time."""
        return self.find(f"profiles/{name}")

    def profile_names(self) -> list[str]:
        """Names of the project's profiles."""
        return self.names("profiles", "listing profiles")

    def put_profile(self, name: str, body: Json) -> None:
        """Create the profile or replace its config, devices and description."""
        if self.profile(name) is None:
            self.call("POST", "profiles", {"name": name, **body}, f"creating profile {name}")
        else:
            self.call("PUT", f"profiles/{name}", body, f"updating profile {name}")

    def delete_profile(self, name: str) -> None:
        """Delete a profile."""
        self.call("DELETE", f"profiles/{name}", what=f"deleting profile {name}")

    # -- networks and their ACLs ------------------------------------------------------------

    def networks(self, *, target: str = "") -> list[Json]:
        """Every network with its config (as the member target sees them)."""
        result: list[Json] = self.get("networks", "listing networks", recursion=1, **_on(target))
        return result or []

    def network(self, name: str) -> Json:
        """One network's record (type, config, description); NotFound when there is none."""
        result: Json = self.get(f"networks/{name}", f"network {name}")
        return result

    def network_state(self, name: str, *, target: str = "") -> Json:
        """A network's live state on the member target: up or down, its addresses."""
        where = _on(target)
        result: Json = self.get(f"networks/{name}/state", f"state of network {name}", **where)
        return result or {}

    def network_leases(self, name: str) -> list[Json]:
        """The addresses a managed bridge leased (DHCP and static ones)."""
        result: list[Json] = self.get(f"networks/{name}/leases", f"leases of {name}")
        return result or []

    def create_network(self, body: Json) -> None:
        """Create a network (body as POST /1.0/networks takes it)."""
        self.call("POST", "networks", body, f"creating network {body.get('name')}")

    def update_network(self, name: str, config: Json, what: str = "") -> None:
        """Set these config keys of a network, keeping the others (one PATCH, no read)."""
        self.call("PATCH", f"networks/{name}", {"config": config}, what or f"updating {name}")

    def put_network(self, name: str, config: Json, description: str, what: str = "") -> None:
        """Replace a network's config: keys it lacks are gone afterwards."""
        body = {"config": config, "description": description}
        self.call("PUT", f"networks/{name}", body, what or f"updating {name}")

    def network_acl(self, name: str) -> Json | None:
        """A network ACL's record, or None."""
        return self.find(f"network-acls/{name}")

    def create_network_acl(self, body: Json) -> None:
        """Create a network ACL (name, description, egress and ingress rules)."""
        self.call("POST", "network-acls", body, f"creating ACL {body.get('name')}")

    def delete_network_acl(self, name: str) -> None:
        """Delete a network ACL (no network may still name it)."""
        self.call("DELETE", f"network-acls/{name}", None, f"deleting ACL {name}")

    # -- storage --------------------------------------------------------------------------

    def storage_pool(self, name: str) -> Json | None:
        """A storage pool's record (driver, config), or None."""
        return self.find(f"storage-pools/{name}")

    def create_storage_pool(self, body: Json) -> None:
        """Create a storage pool (body as POST /1.0/storage-pools takes it)."""
        self.call("POST", "storage-pools", body, f"creating storage pool {body.get('name')}")

    def create_volume(self, pool: str, name: str, *, target: str = "") -> None:
        """Create a custom filesystem volume in pool, on the member target."""
        body = {"name": name, "content_type": "filesystem"}
        where = f"storage-pools/{pool}/volumes/custom"
        self.call("POST", where, body, f"creating volume {name}", params=_on(target))

    def delete_volume(self, pool: str, name: str, *, target: str = "") -> None:
        """Delete a custom volume of pool, on the member target."""
        where = f"storage-pools/{pool}/volumes/custom/{name}"
        self.call("DELETE", where, None, f"deleting {name}", params=_on(target))

    # -- projects, cluster, trust -----------------------------------------------------------

    def create_project(self, name: str, config: Json, description: str = "") -> None:
        """Create a project with these features (config)."""
        body = {"name": name, "description": description, "config": config}
        self.call("POST", "projects", body, f"creating project {name}")

    def delete_project(self, name: str) -> None:
        """Delete an empty project."""
        self.call("DELETE", f"projects/{name}", what=f"deleting project {name}")

    def cluster_member(self, name: str) -> Json:
        """A cluster member's record (its url, roles, status)."""
        result: Json = self.get(f"cluster/members/{name}", f"member {name}")
        return result

    def redeem_token(self, token: str, name: str) -> None:
        """Have the server trust this client's certificate through a trust token."""
        body = {"type": "client", "trust_token": token, "name": name}
        self.call("POST", "certificates", body, "using the trust token")
