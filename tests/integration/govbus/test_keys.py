"""``govbus keys`` as the information center and an agency use it, on a real PostgreSQL: an
agency generates its pair (private key mode 600, never overwritten), the center registers,
lists, revokes; only the center may register or revoke (Art. 24); ``show --bus`` gives the
bus's public keys that subscribers verify with."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from govbus.core import access, keys_store, signatures
from tests.integration.govbus.test_access import cli


def test_generate_register_list_rotate_revoke(empty_database: str, tmp_path: Path) -> None:
    from govbus.core import db

    dsn = empty_database
    db.migrate(dsn)
    center = access.issue(dsn, access.INFORMATION_CENTER, "tests")
    env = {"GOVBUS_STATE_DIR": str(tmp_path / "state")}

    code, out, err = cli(dsn, "keys", "generate", "--agency", "tax", "--out",
                         str(tmp_path / "k1"), "--json", extra=env)
    assert code == 0, err
    made = json.loads(out)
    private = Path(made["private_key"])
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    assert made["key_id"] == signatures.key_id(signatures.load_private(private).public_key())
    code, _, err = cli(dsn, "keys", "generate", "--agency", "tax", "--out",
                       str(tmp_path / "k1"), extra=env)
    assert code == 1 and "never overwritten" in err
    code, _, err = cli(dsn, "keys", "generate", "--agency", "no_such", "--out",
                       str(tmp_path / "k1"), extra=env)
    assert code == 1 and "not an agency of the catalogue nor the information center" in err

    register = ("keys", "register", "--agency", "tax", "--public-key", made["public_key"])
    code, _, err = cli(dsn, *register, token=access.issue(dsn, "tax", "tests"), extra=env)
    assert code == 1 and "Art. 24" in err  # an agency cannot register its own key
    code, out, err = cli(dsn, *register, token=center, extra=env)
    assert code == 0 and made["key_id"] in out and "1 valid key" in out, err
    code, _, err = cli(dsn, "keys", "register", "--agency", "hrss", "--public-key",
                       made["public_key"], token=center, extra=env)
    assert code == 1 and "registered for tax" in err  # one key speaks for one agency

    # a rotation: a second key, both valid
    code, out, _ = cli(dsn, "keys", "generate", "--agency", "tax", "--out", str(tmp_path / "k2"),
                       "--json", extra=env)
    second = json.loads(out)
    code, out, err = cli(dsn, "keys", "register", "--agency", "tax", "--public-key",
                         second["public_key"], token=center, extra=env)
    assert code == 0 and "2 valid key" in out, err
    code, out, _ = cli(dsn, "keys", "list", "--agency", "tax", "--json", extra=env)
    assert {(k["key_id"], k["valid"]) for k in json.loads(out)} == {
        (made["key_id"], True), (second["key_id"], True)}

    code, out, err = cli(dsn, "keys", "revoke", "--agency", "tax", "--key-id", made["key_id"],
                         token=center, extra=env)
    assert code == 0 and "auth.revoked_key" in out and "1 valid key" in out, err
    code, _, err = cli(dsn, "keys", "revoke", "--agency", "hrss", "--key-id", second["key_id"],
                       token=center, extra=env)
    assert code == 1 and "hrss has no key" in err
    code, out, _ = cli(dsn, "keys", "list", extra=env)
    assert "revoked" in out and "valid" in out
    code, _, err = cli(dsn, *register, token=center, extra=env)
    assert code == 1 and "never valid again" in err
    rows = {r.key_id: r for r in keys_store.list_keys(dsn, "tax")}
    assert not rows[made["key_id"]].valid and rows[second["key_id"]].valid


def test_show_bus_prints_the_valid_bus_keys(empty_database: str, tmp_path: Path) -> None:
    from govbus.core import db

    dsn = empty_database
    db.migrate(dsn)
    code, _, err = cli(dsn, "keys", "show", "--bus")
    assert code == 1 and "no valid key" in err
    for _ in range(2):  # during a rotation of the bus's key
        keys_store.register(dsn, keys_store.BUS, signatures.generate().public_key(), "tests")
    code, out, err = cli(dsn, "keys", "show", "--bus", "--out", str(tmp_path / "bus.pub"))
    assert code == 0 and "2 public key(s)" in out, err
    assert len(signatures.load_public_file(tmp_path / "bus.pub")) == 2
    code, out, _ = cli(dsn, "keys", "show", "--bus")
    assert out.count("BEGIN PUBLIC KEY") == 2
