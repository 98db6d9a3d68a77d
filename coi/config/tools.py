"""The AI tools coi runs, as data: binary, state folder, credentials, arguments, install steps.

Pure: no I/O. A tool's versions are pinned in the image's pins file (`[tools] NAME`); the
install lines read the pinned version from $COI_TOOL_VERSION when the build runs them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from coi.core.errors import UsageError

if TYPE_CHECKING:
    from coi.config.load import Config, ToolDef

DEFAULT = "claude"
_NPM = 'npm install -g --no-fund --no-audit --no-update-notifier "{package}@$COI_TOOL_VERSION"'


@dataclass(frozen=True)
class Brokered:
    """How a tool reaches its model API through the credential broker (coi/broker).

    upstreams are https URLs, the first one the default the base URL leads to; the
    container gets base_url_env (the broker's URL plus base_path; "" none) and a
    placeholder in key_env; the broker sends the real key in key_header ("authorization":
    as Bearer). A tool that takes its base URL from its own config gets it through env
    (variables) or files (absolute paths inside, root-owned, readable), in whose values
    BASE_URL stands for that URL; withheld names credential files (relative to HOME) that
    stay on the host in broker mode, as oauth_file does, because they may hold a key.
    The host credential: an API key in the host variable host_key_env, else the OAuth
    token at token_path of oauth_file (relative to HOME), refreshed at token_url when
    expires_path (epoch ms) is near; oauth_headers go with an OAuth token.
    """

    upstreams: tuple[str, ...]
    base_url_env: str
    base_path: str
    key_env: str
    key_header: str
    host_key_env: str
    oauth_file: str = ""
    token_path: tuple[str, ...] = ()
    refresh_path: tuple[str, ...] = ()
    expires_path: tuple[str, ...] = ()
    token_url: str = ""
    client_id: str = ""
    oauth_headers: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    files: tuple[tuple[str, str], ...] = ()
    withheld: tuple[str, ...] = ()


# Written as is into env values and files, where the broker's URL replaces it.
BASE_URL = "{coi-broker-base-url}"
CLAUDE_BROKER = Brokered(
    upstreams=("https://api.anthropic.com",),
    base_url_env="ANTHROPIC_BASE_URL",
    base_path="",
    key_env="ANTHROPIC_API_KEY",
    key_header="x-api-key",
    host_key_env="ANTHROPIC_API_KEY",
    oauth_file=".claude/.credentials.json",
    token_path=("claudeAiOauth", "accessToken"),
    refresh_path=("claudeAiOauth", "refreshToken"),
    expires_path=("claudeAiOauth", "expiresAt"),
    token_url="https://console.anthropic.com/v1/oauth/token",
    client_id="9d1c250a-e61b-44d9-88ed-5944d1962f5e",
    # the API takes a subscription's OAuth token only with this beta flag
    oauth_headers=(("anthropic-beta", "oauth-2025-04-20"),),
)
# Codex 0.171 sends its built-in provider to OpenAI whatever OPENAI_BASE_URL says: a
# provider of its own, in the system config layer (the user's ~/.codex/config.toml, which
# may come in as a credential file, stays above it), leads it to the broker.
CODEX_PROVIDER = f"""# coi: Codex reaches the OpenAI API through this session's credential broker.
model_provider = "coi-broker"

[model_providers.coi-broker]
name = "OpenAI (through the coi broker)"
base_url = "{BASE_URL}"
env_key = "OPENAI_API_KEY"
wire_api = "responses"
"""
CODEX_BROKER = Brokered(
    upstreams=("https://api.openai.com",),
    base_url_env="OPENAI_BASE_URL",
    base_path="/v1",
    key_env="OPENAI_API_KEY",
    key_header="authorization",
    host_key_env="OPENAI_API_KEY",
    oauth_file=".codex/auth.json",
    token_path=("tokens", "access_token"),
    refresh_path=("tokens", "refresh_token"),
    files=(("/etc/codex/config.toml", CODEX_PROVIDER),),
)
# OpenCode's OpenAI provider, its base URL set through the config it reads from the
# environment (merged over the user's own config files). Its auth.json holds the keys it
# was given (`opencode auth login`): {"openai": {"type": "api", "key": ...}}.
OPENCODE_BROKER = Brokered(
    upstreams=("https://api.openai.com",),
    base_url_env="",
    base_path="/v1",
    key_env="OPENAI_API_KEY",
    key_header="authorization",
    host_key_env="OPENAI_API_KEY",
    oauth_file=".local/share/opencode/auth.json",
    token_path=("openai", "key"),
    env=(
        (
            "OPENCODE_CONFIG_CONTENT",
            '{"provider": {"openai": {"options": {"baseURL": "' + BASE_URL + '"}}}}',
        ),
    ),
)
# Aider (through litellm) reads OPENAI_API_BASE; its ~/.aider.conf.yml may hold keys.
AIDER_BROKER = Brokered(
    upstreams=("https://api.openai.com",),
    base_url_env="OPENAI_API_BASE",
    base_path="/v1",
    key_env="OPENAI_API_KEY",
    key_header="authorization",
    host_key_env="OPENAI_API_KEY",
    withheld=(".aider.conf.yml",),
)
# OpenCode writes into every config folder it finds (.gitignore, package.json): in coi's
# read-only .opencode (a protected path) that write stops it at start. There it reads no
# project config; a .opencode a trusted layer made writable works as on the host.
OPENCODE_WRAPPER = r"""real=$(readlink -f /usr/local/bin/opencode)
rm -f /usr/local/bin/opencode
cat > /usr/local/bin/opencode <<WRAP
#!/bin/sh
# coi: OpenCode, without the project config when coi keeps /workspace/.opencode read-only.
if [ -d /workspace/.opencode ] && ! [ -w /workspace/.opencode ]; then
    export OPENCODE_DISABLE_PROJECT_CONFIG="\${OPENCODE_DISABLE_PROJECT_CONFIG:-true}"
fi
exec "$real" "\$@"
WRAP
chmod 0755 /usr/local/bin/opencode"""
# aider keeps its chat and input history at the git root (in the workspace) by default:
# under ~/.aider they are the session's state, saved and resumed with it. No analytics
# question (a headless --yes would answer it) and no update check at each start.
AIDER_WRAPPER = r"""cat > /usr/local/bin/aider <<'WRAP'
#!/bin/sh
# coi: aider from its own virtual environment, its histories under ~/.aider.
: "${AIDER_CHAT_HISTORY_FILE:=$HOME/.aider/chat.history.md}"
: "${AIDER_INPUT_HISTORY_FILE:=$HOME/.aider/input.history}"
: "${AIDER_ANALYTICS_DISABLE:=true}" "${AIDER_CHECK_UPDATE:=false}"
export AIDER_CHAT_HISTORY_FILE AIDER_INPUT_HISTORY_FILE AIDER_ANALYTICS_DISABLE AIDER_CHECK_UPDATE
mkdir -p "$HOME/.aider"
exec /opt/aider/bin/aider "$@"
WRAP
chmod 0755 /usr/local/bin/aider"""


@dataclass(frozen=True)
class Tool:
    """One AI tool: how to install it, start it, resume it and what state it keeps.

    state_dir is relative to the home ("" when the tool keeps no state folder, as the
    plain shell); credential_files are relative to the HOME; resume_args replace args
    when resuming (empty: resume runs with args); install lines run as root in the build.
    """

    name: str
    binary: str
    state_dir: str
    credential_files: tuple[str, ...]
    args: tuple[str, ...]
    resume_args: tuple[str, ...]
    version_command: tuple[str, ...]
    install: tuple[str, ...]
    broker: Brokered | None = None  # None: the tool cannot use the broker (copy or none)

    def command(self, resume: bool = False) -> list[str]:
        """The argv that starts the tool (or resumes its newest conversation)."""
        return [self.binary, *(self.resume_args if resume and self.resume_args else self.args)]


BUILTIN: dict[str, Tool] = {
    "claude": Tool(
        name="claude",
        binary="claude",
        state_dir=".claude",
        credential_files=(".claude/.credentials.json", ".claude.json"),
        # The container is the sandbox, so the tool's own prompts would only get in the way.
        args=("--dangerously-skip-permissions",),
        resume_args=("--dangerously-skip-permissions", "--continue"),
        version_command=("claude", "--version"),
        install=(_NPM.format(package="@anthropic-ai/claude-code"),),
        broker=CLAUDE_BROKER,
    ),
    "codex": Tool(
        name="codex",
        binary="codex",
        state_dir=".codex",
        credential_files=(".codex/auth.json", ".codex/config.toml"),
        args=("--dangerously-bypass-approvals-and-sandbox",),
        resume_args=("resume", "--last", "--dangerously-bypass-approvals-and-sandbox"),
        version_command=("codex", "--version"),
        install=(_NPM.format(package="@openai/codex"),),
        broker=CODEX_BROKER,
    ),
    "opencode": Tool(
        name="opencode",
        binary="opencode",
        state_dir=".local/share/opencode",
        credential_files=(".local/share/opencode/auth.json",),
        args=(),
        resume_args=("--continue",),
        version_command=("opencode", "--version"),
        install=(_NPM.format(package="opencode-ai"), OPENCODE_WRAPPER),
        broker=OPENCODE_BROKER,
    ),
    "aider": Tool(
        name="aider",
        binary="aider",
        state_dir=".aider",
        # Not ~/.env: a user's home .env often holds far more than aider's keys.
        credential_files=(".aider.conf.yml",),
        args=("--yes-always",),
        resume_args=("--yes-always", "--restore-chat-history"),
        version_command=("aider", "--version"),
        # aider-chat needs Python < 3.13: Debian 12's 3.11, in a venv (PEP 668).
        install=(
            "apt-get install -y -q --no-install-recommends python3-venv",
            "python3 -m venv /opt/aider",
            '/opt/aider/bin/pip install --no-cache-dir -q "aider-chat==$COI_TOOL_VERSION"',
            AIDER_WRAPPER,
        ),
        broker=AIDER_BROKER,
    ),
    "shell": Tool(
        name="shell",
        binary="bash",
        state_dir="",
        credential_files=(),
        args=(),
        resume_args=(),
        version_command=("bash", "--version"),
        install=(),
    ),
}


def known(cfg: Config | None = None) -> list[str]:
    """Tool names: the built-in ones first, then those config defines."""
    extra = sorted(set(cfg.tools) - set(BUILTIN)) if cfg is not None else []
    return [*BUILTIN, *extra]


def resolve(cfg: Config, name: str | None = None) -> Tool:
    """The tool NAME (default: the configured one) with config's definitions applied.

    `[tools.NAME]` defines a tool or overrides the keys it sets on a built-in one; its
    credential_files are relative to its state_dir. `[tool] binary` overrides the binary
    of the configured tool.
    """
    chosen = name or cfg.tool.name
    tool = BUILTIN.get(chosen)
    definition = cfg.tools.get(chosen)
    if definition is not None:
        tool = from_definition(definition, cfg.origins, tool)
    if tool is None:
        raise UsageError(f"unknown tool {chosen!r}: use one of {', '.join(known(cfg))}")
    if cfg.tool.binary and chosen == cfg.tool.name:
        tool = with_binary(tool, cfg.tool.binary)
    return tool


def from_definition(
    definition: ToolDef, origins: Mapping[str, str], base: Tool | None = None
) -> Tool:
    """A Tool from a `[tools.NAME]` definition; over a built-in, only the keys a layer set."""
    from coi.config.load import DEFAULTS_LABEL

    prefix = f"tools.{definition.name}."
    state_dir = definition.state_dir
    values: dict[str, Any] = {
        "binary": definition.binary,
        "state_dir": state_dir,
        "credential_files": tuple(_under(state_dir, f) for f in definition.credential_files),
        "args": definition.args,
        "resume_args": definition.resume_args,
        "version_command": definition.version_command,
        "install": definition.install,
    }
    if base is None:
        return Tool(name=definition.name, **values)
    given = {
        k: v for k, v in values.items() if origins.get(prefix + k, DEFAULTS_LABEL) != DEFAULTS_LABEL
    }
    if "credential_files" in given and "state_dir" not in given:
        given["credential_files"] = tuple(
            _under(base.state_dir, f) for f in definition.credential_files
        )
    tool = replace(base, **given)
    if "binary" in given and "version_command" not in given:
        tool = with_binary(tool, tool.binary, old=base.binary)
    return with_upstreams(tool, definition.upstreams, origins.get(prefix + "upstreams"))


def with_upstreams(tool: Tool, upstreams: tuple[str, ...], origin: str | None) -> Tool:
    """The tool's broker sends to the upstreams a (trusted) layer set, when one did."""
    from coi.config.load import DEFAULTS_LABEL

    if tool.broker is None or not upstreams or origin in (None, DEFAULTS_LABEL):
        return tool
    return replace(tool, broker=replace(tool.broker, upstreams=tuple(upstreams)))


def with_binary(tool: Tool, binary: str, old: str | None = None) -> Tool:
    """The tool started by another binary; a version command that named the old one follows."""
    previous = old or tool.binary
    version = tool.version_command
    if version and version[0] == previous:
        version = (binary, *version[1:])
    return replace(tool, binary=binary, version_command=version)


def _under(state_dir: str, path: str) -> str:
    """A path relative to the state folder, made relative to the home."""
    return f"{state_dir.rstrip('/')}/{path}" if state_dir else path


def for_build(cfg: Config) -> list[Tool]:
    """The tools the coi image installs: `[build] tools`, in order, without repeats."""
    seen: dict[str, Tool] = {}
    for name in cfg.build.tools:
        if name not in seen:
            seen[name] = resolve(cfg, name)
    return list(seen.values())
