"""The one downloader: a URL to a file, resumable, with a timeout, an optional sha256 check and a progress bar.

Used by the prepare step (bench/data/download.py: the COCO archives) and by FID's Inception weights
(bench/metrics/features.py). Bytes go to `<dest>.part`, which becomes `dest` (os.replace) only once complete
and verified, so a reader never sees a half-written file; a rerun continues the .part with an HTTP Range
request. Only the standard library (urllib) and tqdm are used.
"""

from __future__ import annotations

import http.client
import re
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.core.errors import BenchError
from bench.core.results import file_sha256

_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


class DownloadError(BenchError):
    """The server could not be reached (offline, refused, timed out). `reason` is the short cause, for callers
    that explain in their own words how to supply the file instead."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


def _offline_error(url: str, dest: Path, sha256: str | None, reason: object, hint: str) -> DownloadError:
    checksum = f" (sha256 {sha256})" if sha256 else ""
    return DownloadError(
        f"Could not download {url}: {reason}. Without internet access, download it on another machine{checksum}, "
        f"put it at {dest} and run this step again (a complete file there is verified, not downloaded again)"
        + (f"; {hint}" if hint else "") + ".",
        reason=str(reason),
    )


def download_file(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    chunk_size: int = 1 << 20,
    hint: str = "",
) -> dict[str, Any]:
    """Download `url` to `dest`, resumably, and verify its sha256 when one is given.

    Bytes are appended to `dest`.part; an existing .part is continued with `Range: bytes=N-` (a server
    that answers 200 instead of 206 restarts it). A tqdm bar shows bytes, rate and ETA when `progress`.
    `timeout` bounds each socket operation. `size`, when given, is checked against the server's before
    downloading. On a sha256 mismatch the .part is deleted and BenchError raised. An unreachable server
    raises DownloadError, whose message ends with `hint` (another way to supply the file). Returns url,
    path, bytes, sha256 (always computed) and verified (whether a known sha256 was checked).
    """
    from tqdm import tqdm

    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    if dest.is_file():
        # A complete file from an earlier run, or one the user put there by hand.
        digest = file_sha256(dest)
        if sha256 and digest != sha256:
            raise BenchError(f"{dest} has sha256 {digest}, expected {sha256} for {url}. Delete it and run this step "
                             "again to download it afresh.")
        return {"url": url, "path": str(dest), "bytes": dest.stat().st_size, "sha256": digest, "verified": bool(sha256)}
    dest.parent.mkdir(parents=True, exist_ok=True)
    offset = part.stat().st_size if part.is_file() else 0
    if size is not None and offset > size:
        part.unlink()
        offset = 0
    headers = {"User-Agent": "muse-bench"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and offset:  # nothing left to fetch: the .part is already complete
            response = None
        else:
            raise BenchError(f"{url} answered HTTP {err.code} {err.reason}. Check the URL (or the mirror), or "
                             f"download it by hand to {dest}.") from err
    except (urllib.error.URLError, OSError) as err:
        raise _offline_error(url, dest, sha256, getattr(err, "reason", err), hint) from err
    if response is not None:
        with response:
            if offset and response.status != 206:
                offset = 0  # the server ignored the Range header and sends the whole file
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            if match and match.group(3) != "*":
                total: int | None = int(match.group(3))
            elif response.headers.get("Content-Length"):
                total = offset + int(response.headers["Content-Length"])
            else:
                total = None
            if size is not None and total is not None and total != size:
                raise BenchError(f"{url} is {total} bytes, expected {size}: the server sends another file. Check the "
                                 "URL or mirror.")
            with tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                      desc=dest.name, disable=not progress) as bar, part.open("ab" if offset else "wb") as out:
                try:
                    while chunk := response.read(chunk_size):
                        out.write(chunk)
                        bar.update(len(chunk))
                except (OSError, http.client.HTTPException) as err:
                    raise BenchError(f"Download of {url} interrupted after {out.tell()} bytes ({err}); run this step "
                                     f"again to resume it from {part}.") from err
            if total is not None and part.stat().st_size < total:
                raise BenchError(f"Download of {url} stopped at {part.stat().st_size} of {total} bytes; run this step "
                                 f"again to resume it from {part}.")
    digest = file_sha256(part)
    if sha256 and digest != sha256:
        part.unlink()
        raise BenchError(f"{url} downloaded with sha256 {digest}, expected {sha256}; the file was deleted. Run this "
                         "step again; if it fails again, the server (or mirror) serves another file.")
    part.replace(dest)
    return {"url": url, "path": str(dest), "bytes": dest.stat().st_size, "sha256": digest, "verified": bool(sha256)}
