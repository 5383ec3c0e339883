"""Bearer-token check for mutating endpoints; the token comes from the environment, never config."""

from __future__ import annotations

import hmac
import os
from collections.abc import Callable, Mapping

from fastapi import HTTPException, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

_bearer = HTTPBearer(auto_error=False, description="VLMTRADER_API_TOKEN, for mutating endpoints")


def token_from_env(name: str, env: Mapping[str, str] | None = None) -> str | None:
    """The token, or None when unset/blank (then mutating endpoints answer 503)."""
    value = (os.environ if env is None else env).get(name, "").strip()
    return value or None


def require_token(token: str | None, *, token_env: str) -> Callable[..., None]:
    """A FastAPI dependency that accepts only `Authorization: Bearer <token>`."""

    def check(credentials: HTTPAuthorizationCredentials | None = Security(_bearer)) -> None:  # noqa: B008
        if token is None:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                detail=f"mutating endpoints are disabled: set ${token_env} and restart",
            )
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="missing bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                detail="wrong bearer token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )

    return check
