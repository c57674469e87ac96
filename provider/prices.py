"""What a node-hour costs: a list-price table for Azure's GPU sizes, the connection's own prices, and the
rule that picks one for a cluster.

The table is Azure's pay-as-you-go Linux list price in one region on one date (``TABLE_REGION``,
``TABLE_CURRENCY``, ``TABLE_DATE``), for the sizes GPU teams rent; it is a fallback, not a bill: a
connection's ``prices.vm_sizes`` overrides it (an enterprise agreement, another region), and Spot
(Batch AI's lowpriority) is the list price times ``prices.spot_factor``. Machines that are simply
there (SSH hosts, a Slurm partition, local slots) are not free either, but only their owner knows
what an hour costs (amortised hardware, power, hosting): ``prices.node_hour``. Where no price is
known the cost is not 0 but unknown, and says why.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

TABLE_REGION = "eastus"
TABLE_CURRENCY = "USD"
TABLE_DATE = "2025-06"
TABLE_SOURCE = f"Azure list price, {TABLE_REGION}, pay-as-you-go Linux, {TABLE_DATE}"

# vmSize (lower case) -> (price per hour in TABLE_CURRENCY, GPUs per node; a fraction for a GPU partition)
SIZES: dict[str, tuple[float, float]] = {
    # NC (K80; retired by Azure, still what Batch AI's recipes name)
    "standard_nc6": (0.90, 1),
    "standard_nc12": (1.80, 2),
    "standard_nc24": (3.60, 4),
    "standard_nc24r": (3.96, 4),
    # NC v2 (P100), NC v3 (V100)
    "standard_nc6s_v2": (2.07, 1),
    "standard_nc12s_v2": (4.14, 2),
    "standard_nc24s_v2": (8.28, 4),
    "standard_nc6s_v3": (3.06, 1),
    "standard_nc12s_v3": (6.12, 2),
    "standard_nc24s_v3": (12.24, 4),
    "standard_nc24rs_v3": (13.46, 4),
    # NCas T4 v3
    "standard_nc4as_t4_v3": (0.526, 1),
    "standard_nc8as_t4_v3": (0.752, 1),
    "standard_nc16as_t4_v3": (1.204, 1),
    "standard_nc64as_t4_v3": (4.352, 4),
    # NC A100 v4
    "standard_nc24ads_a100_v4": (3.673, 1),
    "standard_nc48ads_a100_v4": (7.346, 2),
    "standard_nc96ads_a100_v4": (14.692, 4),
    # ND A100 v4, ND H100 v5
    "standard_nd96asr_v4": (27.197, 8),
    "standard_nd96amsr_a100_v4": (32.770, 8),
    "standard_nd96isr_h100_v5": (98.320, 8),
    # NV (M60, A10 partitions)
    "standard_nv6": (1.14, 1),
    "standard_nv12s_v3": (1.14, 1),
    "standard_nv24s_v3": (2.28, 2),
    "standard_nv6ads_a10_v5": (0.454, 1 / 6),
    "standard_nv12ads_a10_v5": (0.908, 1 / 3),
    "standard_nv36ads_a10_v5": (3.20, 1),
}


class PriceSettings(BaseModel):
    """The connection's ``prices`` field."""

    model_config = ConfigDict(extra="forbid", strict=True)

    currency: str = Field(default=TABLE_CURRENCY, pattern=r"^[A-Z]{3}$", description="of node_hour, vm_sizes and daily_budgets")
    node_hour: float | None = Field(
        default=None, ge=0, le=100_000, description="a node-hour of the SSH hosts, Slurm nodes or local slots: hardware and power"
    )
    vm_sizes: dict[str, float] = Field(default_factory=dict, description="vmSize -> price per node-hour, over the shipped table")
    spot_factor: float = Field(default=0.3, gt=0, le=1, description="lowpriority (Spot) costs the list price times this")
    daily_budgets: dict[str, float] = Field(
        default_factory=dict, description='cluster name (or "*" for every cluster) -> what a UTC day may cost; new jobs wait beyond'
    )

    @field_validator("vm_sizes", "daily_budgets")
    @classmethod
    def _amounts(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if not 0 <= amount <= 10_000_000:
                raise ValueError(f"{name}: an amount from 0 to 10,000,000, got {amount}")
            if not name or len(name) > 80:
                raise ValueError(f"{name!r}: a name of 1 to 80 characters")
        return {name.lower() if name != "*" else name: amount for name, amount in value.items()}

    def daily_budget(self, cluster: str) -> float | None:
        budgets = self.daily_budgets
        return budgets.get(cluster.lower(), budgets.get("*"))


@dataclass(frozen=True)
class Rate:
    """A node-hour's price for one cluster (``amount`` None: unknown, ``reason`` says why), and GPUs per node."""

    amount: float | None
    currency: str
    source: str
    reason: str | None = None
    gpus_per_node: float | None = None  # from the size table, where node discovery found none

    def cost(self, node_seconds: float) -> float | None:
        return None if self.amount is None else round(self.amount * node_seconds / 3600, 4)

    def to_json(self) -> dict[str, object]:
        found: dict[str, object] = {"perNodeHour": self.amount, "currency": self.currency, "source": self.source}
        if self.reason:
            found["reason"] = self.reason
        return found


def rate_for(prices: PriceSettings | None, vm_size: str | None, cloud: bool, spot: bool) -> Rate:
    """The price of one of the cluster's node-hours: the connection's for its vmSize, else (Azure VMs) the
    table's, else (machines that are simply there) the connection's node_hour; Spot at spot_factor."""
    prices = prices or PriceSettings()
    size = (vm_size or "").lower()
    listed = SIZES.get(size)
    gpus = listed[1] if listed else None
    factor = prices.spot_factor if spot else 1.0
    how = f" x {factor} (Spot)" if spot else ""
    if size and size in prices.vm_sizes:
        return Rate(round(prices.vm_sizes[size] * factor, 6), prices.currency, f"connection prices.vm_sizes{how}", gpus_per_node=gpus)
    if cloud:
        if listed is None:
            reason = f"no list price for vmSize {vm_size!r}: set prices.vm_sizes in the connection"
            return Rate(None, prices.currency, "none", reason, gpus)
        return Rate(round(listed[0] * factor, 6), TABLE_CURRENCY, f"{TABLE_SOURCE}{how}", gpus_per_node=gpus)
    if prices.node_hour is not None:
        return Rate(prices.node_hour, prices.currency, "connection prices.node_hour", gpus_per_node=gpus)
    reason = "no price for machines that are simply there (SSH hosts, Slurm nodes, local slots): set prices.node_hour in the connection"
    return Rate(None, prices.currency, "none", reason, gpus)
