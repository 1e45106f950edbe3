"""ComfyUI behind a login: the credentials and the files nginx reads them from (pure).

ComfyUI has no authentication, so nginx listens on each instance's public port, asks for a
user name and password (HTTP basic auth) or an API token (``Authorization: Bearer ...``)
and proxies HTTP and the WebSocket to ComfyUI, which listens where only the proxy reaches
it. The credentials live on the pod's volume (0600), so a re-deploy and the boot phase keep
them; ``podforge auth show`` on the pod prints them on request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

# nginx's users file (auth_basic_user_file) in the salted SHA-1 scheme it reads itself;
# a salt derived from the credentials keeps the file the same for the same password, so a
# deploy compares it by digest instead of rewriting it.
SCHEME = "{SSHA}"


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str
    token: str

    @classmethod
    def of(cls, user: str, password: str, token: str | None) -> Credentials:
        """The user's password, and their token or one derived from the password."""
        derived = hmac.new(password.encode(), b"podforge comfyui api token", "sha256")
        return cls(user, password, token or base64.urlsafe_b64encode(derived.digest()).decode())

    @classmethod
    def parse(cls, text: str) -> Credentials:
        found = json.loads(text)
        return cls(str(found["user"]), str(found["password"]), str(found["token"]))

    def as_json(self) -> str:
        return json.dumps({"user": self.user, "password": self.password, "token": self.token})

    def users_file(self) -> str:
        """The line nginx's auth_basic_user_file holds for this user."""
        salt = hmac.new(self.token.encode(), self.user.encode(), "sha256").digest()[:8]
        digest = hashlib.sha1(self.password.encode() + salt).digest()
        return f"{self.user}:{SCHEME}{base64.b64encode(digest + salt).decode()}\n"

    def token_map(self) -> str:
        """The nginx map entry that lets the API token through without the basic login
        (an ``include`` inside ``map $http_authorization $podforge_realm``)."""
        return f'"Bearer {self.token}" off;\n'


@dataclass(frozen=True)
class AuthFiles:
    """Where the credentials and nginx's copies of them live on the pod."""

    directory: str  # 0700, on the volume

    @property
    def credentials(self) -> str:
        return f"{self.directory}/credentials.json"

    @property
    def users(self) -> str:
        return f"{self.directory}/htpasswd"

    @property
    def token_map(self) -> str:
        return f"{self.directory}/token-map.conf"

    def all(self) -> list[str]:
        return [self.credentials, self.users, self.token_map]


def auth_files(workspace_dir: str) -> AuthFiles:
    return AuthFiles(f"{workspace_dir}/.podforge/auth")


def private_port(port: int) -> int:
    """Where ComfyUI listens behind the proxy: its public port plus 10000 (8188 -> 18188)."""
    return port + 10000
