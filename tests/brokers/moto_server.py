"""moto in server mode on loopback: an AWS endpoint (Kinesis here) for tests and benchmarks.

`MotoServer(workdir)` picks a free port; `start()` runs ``moto_server -H 127.0.0.1 -p PORT``
and returns once it answers; `stop()` ends it with SIGTERM, `kill()` with SIGKILL,
`restart()` starts it again on the same port. moto keeps its state in memory: a restart
loses every stream, so after one a test recreates its streams (`create_stream`), as a
user's infrastructure would. `env` holds fake credentials and a region for the clients.
Usable from tests and from bench scripts (no pytest here).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from brokers.process import BrokerProcess, free_port

REGION = "us-east-1"
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_REGION": REGION,
    "AWS_DEFAULT_REGION": REGION,
}


def moto_server_binary() -> str | None:
    """The moto_server executable beside this Python, or on PATH; None when not installed."""
    beside = Path(sys.executable).with_name("moto_server")
    return str(beside) if beside.exists() else shutil.which("moto_server")


class MotoServer(BrokerProcess):
    """One moto_server process on 127.0.0.1:`port`."""

    def __init__(self, workdir: Path, *, binary: str | None = None) -> None:
        found = binary or moto_server_binary()
        if found is None:
            raise FileNotFoundError("moto_server is not installed (pip install 'moto[server]')")
        super().__init__(workdir, "moto.log")
        self.binary = found
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        """Environment for a client of this endpoint: fake credentials and the region."""
        return dict(FAKE_CREDENTIALS)

    def start(self, timeout: float = 20.0) -> MotoServer:
        assert not self.running, "already running"
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen([self.binary, "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto_server exited: {self.log_file.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"moto_server did not listen within {timeout:.0f} s")

    # -- a plain boto3 client: the independent side of the tests -----------------------

    def client(self, service: str = "kinesis") -> Any:
        import boto3

        return boto3.client(
            service, endpoint_url=self.url, region_name=REGION, aws_access_key_id="testing",
            aws_secret_access_key="testing", aws_session_token="testing",
        )

    def create_stream(self, name: str, shards: int = 1, timeout: float = 10.0) -> None:
        """Create stream `name` and wait until it is ACTIVE."""
        kinesis = self.client()
        kinesis.create_stream(StreamName=name, ShardCount=shards)
        deadline = time.monotonic() + timeout
        while kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
            if time.monotonic() > deadline:
                raise RuntimeError(f"stream {name} not ACTIVE after {timeout:.0f} s")
            time.sleep(0.05)

    def read_stream(self, name: str) -> Iterator[dict[str, Any]]:
        """Every record of stream `name`, shard by shard from the oldest (GetRecords)."""
        kinesis = self.client()
        for shard in kinesis.list_shards(StreamName=name)["Shards"]:
            iterator = kinesis.get_shard_iterator(
                StreamName=name, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
            )["ShardIterator"]
            while iterator:
                page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
                for record in page["Records"]:
                    yield {**record, "ShardId": shard["ShardId"]}
                if not page["Records"]:
                    break
                iterator = page.get("NextShardIterator")
