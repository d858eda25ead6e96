"""Remote storage checked at the boundary: a URL whose endpoint cannot be reached, whose bucket
does not exist or whose credentials are refused is refused in one line before any work starts,
so that nothing is left half-written. Errors during a run are retried by s3fs (5 attempts) and
botocore, as their settings say (``~/.aws/config``, ``AWS_MAX_ATTEMPTS``, ``AWS_RETRY_MODE``).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import botocore.exceptions
import fsspec

from nic_ray.errors import NicError, first_line


def check_storage(url: str, what: str) -> None:
    """Raise `NicError` naming ``what`` and ``url`` where the storage of a remote ``url`` fails.

    A bucket the credentials may not list is accepted where ``url`` itself may be read.

    >>> check_storage("slides/case-001.svs", "--slides")  # local paths: their own errors later
    """
    if "://" not in url or url.startswith("file://"):
        return
    fs, path = fsspec.core.url_to_fs(url)
    endpoint = urlsplit(getattr(fs, "endpoint_url", None) or "")
    if endpoint.username or endpoint.password:  # named without them: error lines end up in logs
        raise NicError(
            f"{what} {url}: the storage endpoint's URL holds credentials; give them in "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile or a role instead"
        )
    bucket = path.split("/", 1)[0]
    try:
        try:
            fs.info(bucket)
        except PermissionError:
            if not fs.exists(path):
                raise
    except FileNotFoundError:
        raise NicError(f"{what} {url}: no bucket {bucket!r} at this endpoint") from None
    except PermissionError as e:
        raise NicError(f"{what} {url}: access refused ({first_line(e)}); check the credentials") from None
    except (botocore.exceptions.BotoCoreError, OSError) as e:
        raise NicError(f"{what} {url}: cannot reach the storage ({first_line(e)})") from None
