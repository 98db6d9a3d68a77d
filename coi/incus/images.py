"""The image verbs: records, aliases, publishing, import and export
(https://linuxcontainers.org/incus/docs/main/rest-api-spec/#/images)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

from coi.incus import lean
from coi.incus.rest import Json, Rest


class Images(Rest):
    """Images of the connection's project."""

    def image_alias(self, alias: str) -> Json | None:
        """The alias record (with its target fingerprint), or None."""
        return self.find(f"images/aliases/{alias}")

    def images(self) -> list[Json]:
        """Every image with its aliases and properties."""
        result: list[Json] = self.get("images", "listing images", recursion=1)
        return result

    def image(self, fingerprint: str) -> Json:
        """One image's record."""
        result: Json = self.get(f"images/{fingerprint}", f"image {fingerprint[:12]}")
        return result

    def import_image(self, metadata: Path, rootfs: Path, properties: Mapping[str, str]) -> str:
        """Upload a split image (metadata tarball + rootfs tarball); returns its fingerprint."""
        from requests_toolbelt import MultipartEncoder  # type: ignore[import-untyped]

        with (
            self._errors("importing image"),
            open(metadata, "rb") as meta,
            open(rootfs, "rb") as root,
        ):
            data = MultipartEncoder(
                {
                    "metadata": ("metadata", meta, "application/octet-stream"),
                    "rootfs": ("rootfs", root, "application/octet-stream"),
                }
            )
            response = self.client.api.images.post(
                data=data, headers={"Content-Type": data.content_type}
            )
            meta_out = self._wait(response.json()["operation"])
        fingerprint: str = meta_out["metadata"]["fingerprint"]
        self.call(
            "PATCH",
            f"images/{fingerprint}",
            {"properties": dict(properties)},
            "setting image properties",
        )
        return fingerprint

    def set_alias(self, alias: str, fingerprint: str, description: str = "") -> None:
        """Point alias at fingerprint, creating or moving it."""
        if self.image_alias(alias) is None:
            body = {"name": alias, "target": fingerprint, "description": description}
            self.call("POST", "images/aliases", body, f"creating alias {alias}")
        else:
            body = {"target": fingerprint, "description": description}
            self.call("PUT", f"images/aliases/{alias}", body, f"moving alias {alias}")

    def delete_image(self, fingerprint: str) -> None:
        """Delete an image by fingerprint."""
        self.call("DELETE", f"images/{fingerprint}", what=f"deleting image {fingerprint[:12]}")

    def export_image(self, fingerprint: str, out: BinaryIO) -> str:
        """Stream an image's tarball into out (never whole in memory); returns its type."""
        if self.lean is not None:
            what = f"exporting image {fingerprint[:12]}"
            status, raw, headers = self.lean.raw(
                "GET", f"images/{fingerprint}/export", what, sink=out.write
            )
            if status >= 400:
                raise lean.refusal(status, raw, what)
            return headers.get("Content-Type", "")
        with self._errors(f"exporting image {fingerprint[:12]}"):
            response = self._node(f"images/{fingerprint}/export").get(stream=True, is_api=False)
            for chunk in response.iter_content(chunk_size=1 << 20):
                out.write(chunk)
            kind: str = response.headers.get("Content-Type", "")
            return kind

    def import_image_file(self, tarball: Path, properties: Mapping[str, str]) -> str:
        """Upload a unified image tarball (as `export_image` writes); returns its fingerprint."""
        with self._errors("importing image"), open(tarball, "rb") as data:
            response = self.client.api.images.post(
                data=data, headers={"Content-Type": "application/octet-stream"}
            )
            meta_out = self._wait(response.json()["operation"])
        fingerprint: str = meta_out["metadata"]["fingerprint"]
        if properties:
            image = self.image(fingerprint)
            merged = {**(image.get("properties") or {}), **properties}
            self.call("PATCH", f"images/{fingerprint}", {"properties": merged}, "image properties")
        return fingerprint

    def has_image(self, fingerprint: str) -> bool:
        """True when an image of that fingerprint is here (one request)."""
        return self.exists(f"images/{fingerprint}")

    def publish_image(self, body: Json, what: str = "publishing an image") -> Json:
        """Make an image from an instance or snapshot (body as POST /1.0/images takes it)
        and wait; the finished operation, whose metadata names the fingerprint."""
        meta: Json = self.call("POST", "images", body, what) or {}
        return meta
