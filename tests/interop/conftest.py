import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from cluster_harness import Cluster  # noqa: E402
from harness import Broker  # noqa: E402


@pytest.fixture
def broker(tmp_path):
    b = Broker(tmp_path / "data").start()
    yield b
    if b.alive():
        b.kill9()


@pytest.fixture
def make_broker(tmp_path):
    """Factory for brokers with a custom TOML config."""
    made = []

    def make(config="", name="data"):
        b = Broker(tmp_path / name, config=config).start()
        made.append(b)
        return b

    yield make
    for b in made:
        if b.alive():
            b.kill9()


@pytest.fixture(scope="session")
def postgres():
    from sink_harness import Postgres
    return Postgres()


@pytest.fixture
def cluster(tmp_path):
    """Three `exacta serve --voters` nodes on 127.0.0.11-13 (cluster_harness)."""
    c = Cluster(tmp_path).start()
    yield c
    c.stop()
