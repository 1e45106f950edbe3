"""The one config model: everything a pod can be told.

Sources, lowest to highest precedence:
group_data defaults < inventory host data < ``--data`` < environment variables.
pyinfra already merges the first three into ``host.data``; ``load_settings`` adds the
environment on top (that is what makes ``ENV``/``-e`` work in Docker and RunPod templates).

Each field's environment variable is its name in upper case (``steadydancer_variant`` ->
``STEADYDANCER_VARIANT``); a structured one (pins, custom models) takes JSON, which is how a
Dockerfile's build arguments pass them (``--build-arg CUSTOM_NODES='[{"name": ...}]'``).
A bad value raises ``SettingsError`` with one line naming the
variable, the value and what it accepts; secrets are ``SecretStr`` and never printed.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import posixpath
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from podforge.core.comfyui_args import ComfyArgsError, parse_comfyui_args
from podforge.core.errors import PodforgeError
from podforge.core.keys import DEFAULT_LAYOUT, check_layout, pod_part
from podforge.core.paths import relative_path, setting_path
from podforge.core.pins import COMFYUI, DEFAULT_CUSTOM_NODES, FEATURE_NODES, RepoPin
from podforge.core.sources import SHA256, ModelSource, check_url, without_secrets
from podforge.core.stacks import FLASH_ATTN_MIRROR
from podforge.core.wheelhouse import WHEEL_FILE_NAME

Phase = Literal["image", "pod", "boot"]
Precision = Literal["auto", "fp16", "fp8", "gguf"]
GgufQuant = Literal["auto", "q2_k", "q3_k_m", "q4_k_m", "q5_k_m", "q6_k", "q8_0"]
Tier = Literal["auto", "consumer", "prosumer", "datacenter"]
MemoryMode = Literal["auto", "full", "model_cpu_offload", "sequential_cpu_offload"]
QwenModel = Literal["fp8", "q2_k", "q3_k_m", "q4_k_m", "q5_k_m", "q6_k", "q8_0"]
StackProfileName = Literal["auto", "torch25-cu124", "torch28-cu128"]

SECRET_FIELDS = frozenset(
    {
        "hf_token",
        "civitai_token",
        "comfyui_password",
        "comfyui_api_token",
        "r2_access_key_id",
        "r2_secret_access_key",
    }
)


class CustomModel(ModelSource):
    """A user's own model file (group_data: custom_models): its source as the catalog's
    (podforge/core/sources.py) and where it goes, relative to models_dir."""

    dest: str

    @field_validator("dest", mode="before")
    @classmethod
    def _inside_models_dir(cls, value: object) -> str:
        return relative_path(value)  # its PathError is a ValueError: pydantic's message


# Values bound for an nginx map line, a shell or a file read line by line: a plain alphabet.
_TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]{16,512}$")
_SECRET_TEXT = re.compile(r"^[\x21-\x7e]{1,4096}$")  # printable, no spaces
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")  # S3's and R2's bucket names
PATH_SETTINGS = (
    "workspace_dir",
    "comfyui_dir",
    "models_dir",
    "venv_dir",
    "podforge_dir",
    "start_script",
    "uv_cache_dir",
    "wheelhouse_dir",
    "models_staging_dir",
)


def _workflow_source(where: str) -> str:
    """An https:// URL (plain http only to localhost) or a path without control characters."""
    if "://" in where:
        return check_url(where)
    if _CONTROL.search(where):
        raise ValueError("a workflow's path cannot hold control characters")
    return where


class Settings(BaseModel):
    """Desired state of one pod: each setting, its default and what it accepts, documented
    once, here, on its field (group_data/all.py only sets values for every host)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    phase: Phase = "pod"

    # Paths
    workspace_dir: str = "/workspace"
    comfyui_dir: str = "/workspace/ComfyUI"
    models_dir: str = "/workspace/ComfyUI/models"
    venv_dir: str = "/workspace/venv"
    podforge_dir: str = "/opt/podforge"
    # The container's entrypoint (the boot phase, then supervisord). An image puts it outside
    # /workspace, which RunPod's volume covers at run time (docker/Dockerfile).
    start_script: str = "/workspace/start.sh"

    # Features
    enable_steadydancer: bool = False
    enable_turbodiffusion: bool = False
    enable_qwen_edit: bool = False
    enable_wan22: bool = False
    enable_dwpose: bool = False
    enable_r2_sync: bool = False
    enable_openmmlab: bool = False

    # SteadyDancer
    steadydancer_variant: Precision = "auto"
    steadydancer_gguf_model: GgufQuant = "auto"
    steadydancer_gpu_memory_mode: MemoryMode = "auto"
    steadydancer_guide_scale: Annotated[float, Field(ge=1.0, le=10.0)] = 5.0
    steadydancer_condition_guide: Annotated[float, Field(ge=0.1, le=2.0)] = 1.0
    steadydancer_end_cfg: Annotated[float, Field(ge=0.1, le=1.0)] = 0.4
    steadydancer_seed: Annotated[int, Field(ge=-1, le=2**63 - 1)] = -1

    qwen_edit_model: QwenModel = "fp8"

    # GPU policy overrides ("auto" = from the threshold table)
    gpu_tier: Tier = "auto"
    gpu_memory_mode: MemoryMode = "auto"

    # ComfyUI
    comfyui_args: list[str] = Field(default_factory=list)
    # Seconds verify waits for every ComfyUI instance to answer /system_stats.
    verify_timeout: Annotated[int, Field(ge=1, le=3600)] = 120
    comfyui_listen: str = "0.0.0.0"
    comfyui_port: Annotated[int, Field(ge=1024, le=55000)] = 8188
    # A login in front of ComfyUI (podforge/core/auth.py): nginx on comfyui_listen and each
    # instance's port asks for comfyui_user and comfyui_password (basic auth) or the API
    # token (Authorization: Bearer ...); ComfyUI itself listens on comfyui_private_listen,
    # port + 10000. Without a password or token set, the first deploy generates strong ones
    # and keeps them on the volume (`podforge auth show` on the pod prints them). off: ComfyUI
    # answers anyone who reaches its port (the plan warns).
    comfyui_auth: bool = True
    comfyui_user: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")] = "comfy"
    comfyui_password: SecretStr | None = None
    comfyui_api_token: SecretStr | None = None
    comfyui_private_listen: str = "127.0.0.1"

    # ComfyUI and custom nodes, each at a pinned commit (podforge/core/pins.py). A node is
    # {name, url, commit}: checked out at <comfyui_dir>/custom_nodes/<name>.
    comfyui_repo: RepoPin = COMFYUI
    custom_nodes: list[RepoPin] = Field(default_factory=lambda: list(DEFAULT_CUSTOM_NODES))

    # Python stack
    stack_profile: StackProfileName = "auto"
    # uv's cache, on the volume: a re-provisioned pod, a second venv or the boot phase
    # installs the lock from it in seconds (hardlinks, when on the venv's filesystem).
    uv_cache_dir: str = "/workspace/.cache/uv"
    # Wheels no index serves (mmcv, built once per key), on the volume; the fleet shares
    # them through the R2 bucket where R2 is set (podforge/core/wheelhouse.py).
    wheelhouse_dir: str = "/workspace/.cache/podforge/wheelhouse"
    # Where flash-attn's release wheels are downloaded from (GitHub, or a mirror of it).
    flash_attn_mirror: str = FLASH_ATTN_MIRROR
    # The sha256 of release wheels by file name, over the ones podforge pins (FLASH_ATTN_SHA256):
    # a mirror's own builds, or a release podforge does not pin yet. `sha256sum` of the file.
    flash_attn_sha256: dict[str, str] = Field(default_factory=dict)

    # Workflows to provision for: paths in the repo or https:// URLs of ComfyUI workflow files.
    # The deploy installs the models and node packs each names (podforge/workflows/needs.py)
    # and the workflow itself into the UI's Workflows panel.
    workflows: list[Annotated[str, AfterValidator(_workflow_source)]] = Field(default_factory=list)

    # Models
    custom_models: list[CustomModel] = Field(default_factory=list)
    hf_endpoint: str = "https://huggingface.co"
    # CivitAI's site (its API and download routes); a stand-in's address in tests.
    civitai_endpoint: str = "https://civitai.com"
    # Files fetched at once, and connections per large file (ranges of at least 20 MiB
    # each, as aria2c's -x16 -s16; Hugging Face's Xet files take hf_xet's own path).
    fetch_concurrency: Annotated[int, Field(ge=1, le=32)] = 4
    fetch_connections: Annotated[int, Field(ge=1, le=64)] = 16
    # Download to this local-disk dir, then publish into models_dir (for a slow network
    # volume: RunPod's top out near 150 MB/s). None: download beside the target.
    models_staging_dir: str | None = None
    # Check downloads against the catalog's exact sizes and plan the disk by them; the
    # sandbox hub serves small stand-in files and turns this off (the hub's own size and
    # sha256 are still checked, and the fetcher checks the disk against the hub's sizes).
    verify_catalog_sizes: bool = True
    hf_token: SecretStr | None = None
    # A CivitAI API key: most CivitAI downloads need one (civitai.com, account settings).
    civitai_token: SecretStr | None = None

    # R2 (outputs sync)
    r2_endpoint: str | None = None
    r2_bucket: str | None = None
    r2_access_key_id: SecretStr | None = None
    r2_secret_access_key: SecretStr | None = None
    # Where each output lands in the bucket (podforge/core/keys.py): {pod} is RunPod's pod
    # id (RUNPOD_POD_ID), else pod_name, else the host name; {day} the day of the file's first
    # upload (UTC); {path} the file under ComfyUI's output dir. The pod and day keep a fleet's
    # outputs apart; objects under the old layout (outputs/{day}/{path}) stay where they are.
    r2_key_layout: str = DEFAULT_LAYOUT
    # This pod's name in a fleet (the inventories set it): r2sync's {pod} off RunPod.
    pod_name: str | None = None

    def checkouts(self) -> dict[str, RepoPin]:
        """Where each pinned repository is checked out: ComfyUI, its custom nodes, then the
        nodes enabled features bring (unless custom_nodes lists one by name)."""
        listed = {node.name for node in self.custom_nodes}
        brought = [
            node
            for feature, nodes in FEATURE_NODES.items()
            if getattr(self, f"enable_{feature}")
            for node in nodes
            if node.name not in listed
        ]
        nodes_dir = posixpath.join(self.comfyui_dir, "custom_nodes")
        pins = [*self.custom_nodes, *brought]
        nodes = {posixpath.join(nodes_dir, node.name): node for node in pins}
        return {self.comfyui_dir: self.comfyui_repo, **nodes}

    @property
    def tools_dir(self) -> str:
        """The pod tools' own venv (podforge fetch, r2sync, verify; locks/tools.txt), apart
        from ComfyUI's: installed in seconds, first, whatever the stack."""
        return f"{self.podforge_dir}/tools"

    @property
    def workflows_stamp(self) -> str:
        """What `podforge workflows install` last wrote (its request's digest, each file's)."""
        return f"{self.podforge_dir}/workflows.json"

    @model_validator(mode="after")
    def _token_with_password(self) -> Settings:
        if self.comfyui_api_token is not None and self.comfyui_password is None:
            raise ValueError(
                "comfyui_api_token is set without comfyui_password: set both, or neither "
                "(the first deploy generates both)"
            )
        return self

    @field_validator("comfyui_args", mode="before")
    @classmethod
    def _check_comfyui_args(cls, value: Any) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, (str, list, tuple)):
            raise ValueError("expected a string of ComfyUI flags")
        try:
            return parse_comfyui_args(value)
        except ComfyArgsError as error:
            raise ValueError(str(error)) from None

    @field_validator("qwen_edit_model", "steadydancer_gguf_model", mode="before")
    @classmethod
    def _lower_quant(cls, value: Any) -> Any:
        # The seeds write quants in upper case (QWEN_EDIT_MODEL="Q4_K_M").
        return value.lower() if isinstance(value, str) else value

    @field_validator("custom_nodes")
    @classmethod
    def _unique_nodes(cls, value: list[RepoPin]) -> list[RepoPin]:
        names = [node.name for node in value]
        doubled = sorted({name for name in names if names.count(name) > 1})
        if doubled:
            raise ValueError(f"node names must be unique; listed twice: {', '.join(doubled)}")
        return value

    @field_validator("r2_endpoint", "hf_endpoint", "civitai_endpoint")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        return value if value is None else check_url(value)

    @field_validator("flash_attn_mirror")
    @classmethod
    def _check_mirror(cls, value: str) -> str:
        # file://: a mirror on the volume, for pods without GitHub.
        return check_url(value, ("https", "file"))

    @field_validator("flash_attn_sha256")
    @classmethod
    def _check_release_hashes(cls, value: dict[str, str]) -> dict[str, str]:
        for name, digest in value.items():
            if not WHEEL_FILE_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a wheel's file name (name-version-tags.whl)")
            if not SHA256.fullmatch(digest):
                raise ValueError(f"the sha256 of {name} is not 64 lower-case hex digits")
        return value

    @field_validator(*PATH_SETTINGS)
    @classmethod
    def _check_path(cls, value: str | None) -> str | None:
        return value if value is None else setting_path(value)

    @field_validator("comfyui_listen", "comfyui_private_listen")
    @classmethod
    def _check_address(cls, value: str) -> str:
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError("expected an IP address such as 0.0.0.0 or 127.0.0.1") from None

    @field_validator("comfyui_api_token")
    @classmethod
    def _check_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _TOKEN.match(value.get_secret_value()):
            raise ValueError(
                "expected 16 to 512 characters of A-Z a-z 0-9 . _ ~ + / = - (it is matched"
                " in nginx's config)"
            )
        return value

    @field_validator("hf_token", "civitai_token", "r2_access_key_id", "r2_secret_access_key")
    @classmethod
    def _check_secret_text(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _SECRET_TEXT.match(value.get_secret_value()):
            raise ValueError("expected printable characters without spaces or line breaks")
        return value

    @field_validator("r2_bucket")
    @classmethod
    def _check_bucket(cls, value: str | None) -> str | None:
        if value is not None and not _BUCKET.match(value):
            raise ValueError("expected a bucket name: 3 to 63 of a-z 0-9 . -")
        return value

    @field_validator("r2_key_layout")
    @classmethod
    def _check_layout(cls, value: str) -> str:
        return check_layout(value)

    @field_validator("pod_name")
    @classmethod
    def _check_pod_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if _CONTROL.search(value):
            raise ValueError("a pod name cannot hold control characters")
        pod_part(value)  # something of it must name the pod in a key
        return value

    @field_validator("custom_models")
    @classmethod
    def _unique_dests(cls, value: list[CustomModel]) -> list[CustomModel]:
        seen: dict[str, int] = {}
        for index, model in enumerate(value):
            if model.dest in seen:
                raise ValueError(
                    f"custom_models[{seen[model.dest]}] and custom_models[{index}] both go to"
                    f" {model.dest}: keep one"
                )
            seen[model.dest] = index
        return value

    @model_validator(mode="after")
    def _private_listen_behind_the_login(self) -> Settings:
        if self.comfyui_auth and not ipaddress.ip_address(self.comfyui_private_listen).is_loopback:
            raise ValueError(
                f"comfyui_private_listen={self.comfyui_private_listen} puts ComfyUI, which has"
                " no login of its own, beside nginx's login on every network: keep it on"
                " 127.0.0.1 (or turn comfyui_auth off, knowingly)"
            )
        return self


SETTING_NAMES: frozenset[str] = frozenset(Settings.model_fields)
# Settings that are objects or lists of objects: their environment values are JSON.
JSON_SETTINGS = frozenset(
    {"comfyui_repo", "custom_nodes", "custom_models", "workflows", "flash_attn_sha256"}
)


class SettingsError(PodforgeError, ValueError):
    """A setting podforge cannot accept. The message is one line, safe to print."""


def env_name(field: str) -> str:
    return field.upper()


def load_settings(data: Mapping[str, Any], environ: Mapping[str, str]) -> Settings:
    """Validate host data with the environment layered on top.

    ``data`` is pyinfra's merged host data (group_data < inventory < --data); keys that
    are not settings (ssh_user, ...) belong to pyinfra and are ignored.
    """
    values: dict[str, Any] = {}
    source: dict[str, str] = {}
    for key, value in data.items():
        if key in SETTING_NAMES:
            values[key] = value
            source[key] = f"{key} (host data)"
        else:
            _refuse_a_typo(key, f"{key} (host data)", SETTING_NAMES)
    # The environment holds every program's variables: only feature flags are judged there.
    flags = {env_name(key) for key in SETTING_NAMES if key.startswith("enable_")}
    for name in environ:
        if name.startswith("ENABLE_") and name not in flags:
            _refuse_a_typo(name, name, flags)
    for key in SETTING_NAMES:
        name = env_name(key)
        if name in environ and environ[name] != "":
            values[key] = _from_environment(name, key, environ[name])
            source[key] = name
    try:
        return Settings(**values)
    except ValidationError as error:
        raise SettingsError(_one_line(error, values, source)) from None


def _refuse_a_typo(name: str, where: str, known: frozenset[str] | set[str]) -> None:
    """A key that is no setting but nearly one is a typo, not another tool's data (pyinfra's
    own keys, say): refused, naming the setting it almost is."""
    nearest = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.85)
    if nearest:
        raise SettingsError(f"{where} is not a setting: did you mean {nearest[0]}?")


def as_environment(values: Mapping[str, Any]) -> dict[str, str]:
    """Settings as environment variables (or build arguments): what ``load_settings`` reads."""
    environment = {}
    for key, value in values.items():
        if key not in SETTING_NAMES:
            raise SettingsError(f"{key} is not a setting (see podforge/core/config.py)")
        plain = _plain(value)
        if key in JSON_SETTINGS:
            environment[env_name(key)] = json.dumps(plain)
        elif isinstance(plain, bool):
            environment[env_name(key)] = "true" if plain else "false"
        elif isinstance(plain, list):  # comfyui_args: flags, as COMFYUI_ARGS takes them
            environment[env_name(key)] = " ".join(plain)
        else:
            environment[env_name(key)] = str(plain)
    return environment


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value


def _from_environment(name: str, key: str, text: str) -> Any:
    if key not in JSON_SETTINGS:
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise SettingsError(
            f"{name} is not JSON ({error.msg} at character {error.pos}): it takes the same"
            " object or list as the group_data setting, written as JSON"
        ) from None


def _one_line(error: ValidationError, values: Mapping[str, Any], source: Mapping[str, str]) -> str:
    first = error.errors()[0]
    loc = first["loc"]
    if not loc:  # a rule across settings: its message names them; no values shown
        return f"settings are not accepted: {_accepts('settings', first)}"
    field = str(loc[0])
    # "custom_models[0].url (host data)=...": the item, then where the value came from.
    where, _, origin = source.get(field, field).partition(" (")
    note = f" ({origin}" if origin else ""
    if field in SECRET_FIELDS:
        shown = "<hidden>"
    elif len(loc) > 1:
        # Inside a list or object (custom_nodes[2].commit): name that item, show its value,
        # but not a whole object, nor a URL's query (either may carry a token).
        where += "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc[1:])
        value = first.get("input")
        shown = "{...}" if isinstance(value, dict) else _shown(value)
    else:
        shown = _shown(values.get(field, first.get("input")))
    return f"{where}{note}={shown} is not accepted: {_accepts(field, first)}"


def _shown(value: Any) -> str:
    """A refused value for people: a URL without its query or user info (either may carry a
    token), control characters escaped, at most 100 characters."""
    if isinstance(value, str) and "://" in value:
        value = without_secrets(value)
    shown = repr(value)
    return shown if len(shown) <= 100 else shown[:97] + "..."


def _bounds(field: str) -> tuple[Any, Any]:
    info = Settings.model_fields.get(field)
    lower = upper = None
    for rule in info.metadata if info else ():
        lower = getattr(rule, "ge", lower)
        upper = getattr(rule, "le", upper)
    return lower, upper


def _accepts(field: str, error: Mapping[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "literal_error":
        return f"expected one of {ctx['expected'].replace(chr(39), '')}"
    if kind in {"greater_than_equal", "less_than_equal", "int_parsing", "float_parsing"}:
        lower, upper = _bounds(field)
        if lower is not None and upper is not None:
            return f"expected a number from {lower} to {upper}"
    if kind == "bool_parsing":
        return "expected true or false (also 1/0, yes/no, on/off)"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "extra_forbidden":
        return "not a known key (see the schemas in podforge/core/config.py and core/pins.py)"
    return error["msg"].lower()


def public_view(settings: Settings) -> dict[str, Any]:
    """Settings as plain data with secrets reduced to whether they are set."""
    view = settings.model_dump(mode="json", exclude=set(SECRET_FIELDS))
    for name in sorted(SECRET_FIELDS):
        view[f"{name}_set"] = getattr(settings, name) is not None
    return view
