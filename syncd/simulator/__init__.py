"""A local FullStory export API (Segment Export and legacy bundles) for tests, demo and bench.

with Simulator(SimulatorConfig(events_per_hour=1000)) as sim:
    sim.faults.add(Fault.RATE_LIMIT, count=2, retry_after=1)
    ...  # point the client at sim.url / sim.legacy_url with "Authorization: Basic sim-key"
    assert loaded_rows == sim.expected_events(start, end)
"""

from __future__ import annotations

from syncd.batch import Bundle
from syncd.simulator.bodies import (
    FORMAT_CSV,
    FORMAT_JSON,
    FORMAT_NDJSON,
    FORMATS,
    ExportSpec,
    ServedRow,
)
from syncd.simulator.config import SimulatorConfig
from syncd.simulator.events import (
    BAD_INT,
    BAD_KINDS,
    BAD_MALFORMED,
    BAD_TIME,
    EventGenerator,
)
from syncd.simulator.faults import Endpoint, Fault, FaultPlan, FiredFault, PlannedFault
from syncd.simulator.legacy import ID_BASE, PAGE_SIZE
from syncd.simulator.server import Simulator, serve
from syncd.simulator.shape import LEGACY_RENAMES
from syncd.simulator.stats import SimulatorStats

__all__ = [
    "BAD_INT",
    "BAD_KINDS",
    "BAD_MALFORMED",
    "BAD_TIME",
    "FORMATS",
    "FORMAT_CSV",
    "FORMAT_JSON",
    "FORMAT_NDJSON",
    "ID_BASE",
    "LEGACY_RENAMES",
    "PAGE_SIZE",
    "Bundle",
    "Endpoint",
    "EventGenerator",
    "ExportSpec",
    "Fault",
    "FaultPlan",
    "FiredFault",
    "PlannedFault",
    "ServedRow",
    "Simulator",
    "SimulatorConfig",
    "SimulatorStats",
    "serve",
]
