"""What CloudWatch should hold after a cycle, computed from the fleet's own price table."""

import fleet as fleet_module

UNITS = {"PluginHealthy": "None", "HealthCheckLatency": "Milliseconds",
         "ProjectedMonthlyCost": "None", "UnitPrice": "None", "CarbonFootprint": "None",
         "CostQueryErrors": "Count"}
SELF_UNITS = {"CycleDuration": "Milliseconds", "DatumsPublished": "Count", "QueueDepth": "Count",
              "PublishFailures": "Count", "QueueBytes": "Bytes", "QueueOldestAge": "Seconds",
              "DatumsDropped": "Count", "BufferCorruptRecords": "Count"}


def parse_basket(spec):
    out = []
    for entry in spec.split(","):
        head, _, query = entry.partition("?")
        rtype, sku = head.split(":")
        tags = dict(p.split("=") for p in query.split("&")) if query else {}
        out.append((rtype, sku, tags))
    return out


def cost_datums(region, basket_spec):
    """{(metric, dims): value} for the cost metrics of one healthy region."""
    out, errors = {}, 0
    for rtype, sku, tags in parse_basket(basket_spec):
        try:
            q = fleet_module.quote(region, rtype, sku, tags)
        except fleet_module.ConnectError:
            errors += 1
            continue
        dims = frozenset({("Region", region), ("ResourceType", rtype), ("Sku", sku)})
        out[("ProjectedMonthlyCost", dims)] = q.get("costPerMonth", 0)
        out[("UnitPrice", dims)] = q.get("unitPrice", 0)
        for m in q.get("impactMetrics", []):
            if m["kind"] == "METRIC_KIND_CARBON_FOOTPRINT":
                out[("CarbonFootprint", dims)] = m["value"]
    out[("CostQueryErrors", frozenset({("Region", region)}))] = errors
    return out
