"""Which price a node-hour gets: the connection's, Azure's list price for cloud VMs, Spot's factor, or unknown with why."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from airflow_batchai.prices import TABLE_SOURCE, PriceSettings, rate_for


def test_azure_vms_cost_the_list_price_spot_a_fraction_and_the_connection_overrides() -> None:
    listed = rate_for(None, "STANDARD_NC6S_V3", cloud=True, spot=False)
    assert (listed.amount, listed.currency, listed.source, listed.gpus_per_node) == (3.06, "USD", TABLE_SOURCE, 1)
    assert listed.cost(1800) == 1.53
    spot = rate_for(PriceSettings(spot_factor=0.25), "Standard_NC6s_v3", cloud=True, spot=True)
    assert spot.amount == 0.765 and "Spot" in spot.source
    agreed = rate_for(PriceSettings(currency="EUR", vm_sizes={"Standard_NC6s_v3": 2.0}), "standard_nc6s_v3", cloud=True, spot=False)
    assert (agreed.amount, agreed.currency) == (2.0, "EUR")
    unknown = rate_for(None, "Standard_Z99", cloud=True, spot=False)
    assert unknown.amount is None and unknown.cost(3600) is None and "prices.vm_sizes" in (unknown.reason or "")


def test_machines_that_are_simply_there_cost_what_the_connection_says_and_are_never_free_by_default() -> None:
    on_prem = rate_for(None, "STANDARD_NC6", cloud=False, spot=False)
    assert on_prem.amount is None and "prices.node_hour" in (on_prem.reason or "") and on_prem.gpus_per_node == 1
    assert rate_for(PriceSettings(node_hour=1.5), "STANDARD_NC6", cloud=False, spot=False).amount == 1.5
    with pytest.raises(ValidationError, match="spot_factor"):
        PriceSettings(spot_factor=0)
    with pytest.raises(ValidationError, match="an amount from 0"):
        PriceSettings(daily_budgets={"gpu": -1})
    assert PriceSettings(daily_budgets={"*": 10, "GPU": 3}).daily_budget("gpu") == 3
    assert PriceSettings(daily_budgets={"*": 10}).daily_budget("other") == 10
