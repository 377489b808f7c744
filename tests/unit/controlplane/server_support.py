"""Tokens and settings for route tests: three tenants over a store-only local backend."""

from __future__ import annotations

from pathlib import Path

import yaml

from carina.platform.controlplane.settings import Settings

ALICE = "alice-token"  # team-a only
BOB = "bob-token"  # team-b only
ADMIN = "admin-token"  # every namespace


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_settings(tmp_path: Path, **overrides: object) -> Settings:
    """Settings of a store-only backend (no worker processes) with the three tokens."""
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(
        yaml.safe_dump(
            {
                "tokens": [
                    {"name": "alice", "token": ALICE, "namespaces": ["team-a"]},
                    {"name": "bob", "token": BOB, "namespaces": ["team-b"]},
                    {"name": "admin", "token": ADMIN, "namespaces": ["*"]},
                ]
            }
        )
    )
    return Settings(state_dir=tmp_path, tokens_file=tokens, run_workers=False, **overrides)
