"""Pull the fleet's measurements as a dataset folder (``edgetune fleet pull``, ``edgetune train --from-fleet``).

Pages through ``GET /v1/telemetry`` (operator token) following the cursor, takes the device profiles
from ``GET /v1/devices``, and writes the search-phase runs in ``agent.dataset``'s format. The folder
is written beside the destination under a temporary name and renamed at the end: a dead server, a
refused token or a malformed page leaves nothing behind (and an older dataset there untouched).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from agent.dataset import MANIFEST_FILE, parse_shape_key, write_dataset
from agent.errors import EdgetuneError, PullError
from agent.settings import OPERATOR_TOKEN_ENV
from agent.store import INVALIDITY

__all__ = ["OPERATOR_TOKEN_ENV", "PullError", "pull_dataset"]

PAGE = 1000




class _Fleet:
    def __init__(self, url: str, token: str, client: httpx.Client | None, timeout: float) -> None:
        self.url = url.rstrip("/")
        self.client = client or httpx.Client(timeout=timeout)
        self.headers = {"Authorization": f"Bearer {token}"}

    def get(self, path: str, **params: Any) -> Any:
        try:
            answer = self.client.get(self.url + path, params=params, headers=self.headers)
        except httpx.HTTPError as exc:
            raise PullError(f"cannot reach the fleet at {self.url}: {type(exc).__name__}: {exc}") from None
        if answer.status_code != 200:
            try:
                why = str(answer.json().get("error", ""))[:200]
            except (ValueError, AttributeError):
                why = answer.text[:200].replace("\n", " ")
            hint = " (check EDGETUNE_FLEET_OPERATOR_TOKEN)" if answer.status_code in (401, 403) else ""
            raise PullError(f"the fleet at {self.url} answered {answer.status_code} to GET {path}: {why}{hint}")
        try:
            return answer.json()
        except ValueError:
            raise PullError(f"the fleet at {self.url} answered GET {path} with something that is not JSON") from None


def _malformed(url: str, what: str) -> PullError:
    return PullError(f"the fleet at {url} sent a malformed page: {what}")


def _devices(fleet: _Fleet) -> dict[str, dict[str, Any]]:
    body = fleet.get("/v1/devices")
    if not isinstance(body, dict) or not isinstance(body.get("devices"), list):
        raise _malformed(fleet.url, "/v1/devices is not {\"devices\": [...]}")
    devices = {}
    for entry in body["devices"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise _malformed(fleet.url, "a device without a name")
        devices[entry["name"]] = entry
    return devices


def _pages(fleet: _Fleet, filters: dict[str, str]) -> Iterator[dict[str, Any]]:
    since: str | None = "0"
    while since is not None:
        body = fleet.get("/v1/telemetry", since=since, limit=PAGE, **filters)
        if not isinstance(body, dict) or not isinstance(body.get("records"), list):
            raise _malformed(fleet.url, "not {\"records\": [...], \"next\": ...}")
        following = body.get("next")
        if following is not None and (not isinstance(following, str) or not following.isdigit()
                                      or int(following) <= int(since)):
            raise _malformed(fleet.url, f"cursor {following!r} does not move past {since}")
        yield from body["records"]
        since = following


def _dataset_record(fleet: _Fleet, record: Any, devices: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """A dataset record of a search-phase run (None for tunings and other phases)."""
    if not isinstance(record, dict) or not isinstance(record.get("data"), dict):
        raise _malformed(fleet.url, "a record is not an object with data")
    if record.get("kind") != "run" or record["data"].get("phase") != "search":
        return None
    data = record["data"]
    try:
        device = devices.get(record["device"], {})
        fingerprint = device.get("fingerprint") or record["device"]
        profile = device.get("profile") or {}
        cores = profile.get("logical_cores") or profile.get("cores") or 1
        status = data["status"]
        if status not in INVALIDITY:
            raise ValueError(f"status {status!r}")
        time_s = data["median_s"] if status == "correct" else None
        return {
            "case": f"{fingerprint}/{data['kernel_key']}/{data['shape']}/{data['target']}/{cores}",
            "device": fingerprint, "kernel": data["kernel"], "kernel_key": data["kernel_key"],
            "shape": parse_shape_key(data["shape"]), "target": data["target"], "cores": cores,
            "config": dict(data["config"]), "status": status, "time_s": time_s,
            "samples": list(data.get("samples") or []), "origin": "measured",
        }
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _malformed(fleet.url, f"record {str(record.get('key'))[:80]!r}: {type(exc).__name__}: {exc}") from None


def _kernel_space(name: str) -> dict[str, Any]:
    """The manifest entry of a kernel: the built-in one's space; a kernel edgetune does not ship gets none."""
    from agent.kernels.registry import find_kernel

    try:
        spec = find_kernel(name)
    except (EdgetuneError, OSError, ValueError):
        return {"name": name, "origin": "fleet"}
    return {"name": name, "origin": "built-in", "space": spec.space_summary()}


def pull_dataset(url: str, token: str, out_dir: str | os.PathLike[str], *, device: str | None = None,
                 kernel: str | None = None, client: httpx.Client | None = None,
                 timeout: float = 30.0) -> dict[str, Any]:
    """Write the fleet's search-phase runs as a dataset at ``out_dir``; returns its manifest.

    ``out_dir`` must not exist, be empty, or hold a dataset (which is replaced only once the new one is
    complete). A correct run without a positive time is skipped (counted in the manifest's notes).
    """
    if not token:
        raise PullError(f"set {OPERATOR_TOKEN_ENV}: reading the fleet needs the operator token")
    out = Path(out_dir)
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / MANIFEST_FILE).is_file())):
        raise PullError(f"{out} exists and is not an empty folder or a dataset; choose another -o")
    out.parent.mkdir(parents=True, exist_ok=True)
    fleet = _Fleet(url, token, client, timeout)
    filters = {k: v for k, v in (("device", device), ("kernel", kernel)) if v is not None}
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.pulling-", dir=out.parent))
    try:
        devices = _devices(fleet)
        spaces: dict[str, dict[str, Any]] = {}
        skipped = {"not correct-with-time": 0}
        pulled = {"records": 0}

        def records() -> Iterator[dict[str, Any]]:
            for raw in _pages(fleet, filters):
                pulled["records"] += 1
                record = _dataset_record(fleet, raw, devices)
                if record is None:
                    continue
                if record["status"] == "correct" and not (isinstance(record["time_s"], (int, float))
                                                          and record["time_s"] > 0):
                    skipped["not correct-with-time"] += 1
                    continue
                if record["kernel_key"] not in spaces:  # write_dataset reads the spaces after the records
                    spaces[record["kernel_key"]] = _kernel_space(record["kernel"])
                yield record

        profiles = {(d.get("fingerprint") or name): (d.get("profile") or {}) for name, d in devices.items()}
        manifest = write_dataset(work, records(), name=f"fleet-{out.name}", commands=[f"edgetune fleet pull {url}"],
                                 devices=profiles, kernels=spaces,
                                 notes={"source": fleet.url, "filters": filters,
                                        "fleet_records_read": pulled["records"],
                                        "skipped_correct_without_time": skipped["not correct-with-time"]})
        _swap_in(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        if client is None:
            fleet.client.close()
    return manifest


def _swap_in(work: Path, out: Path) -> None:
    """Put the finished folder ``work`` at ``out`` (an empty folder or an older dataset there goes)."""
    if not out.exists():
        os.replace(work, out)
        return
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    os.replace(out, old)
    os.replace(work, out)
    shutil.rmtree(old, ignore_errors=True)
