#!/usr/bin/env python3
"""The plugin-fleet cycle as a short boto3 script run by cron: health and cost of each
region over HTTP, then one PutMetricData per region.
Usage: cron_boto3.py NAMESPACE BASKET PORT=REGION..."""

import json
import sys
import time
import urllib.request

import boto3


def main():
    ns, basket, targets = sys.argv[1], sys.argv[2].split(), sys.argv[3:]
    cw = boto3.client("cloudwatch")
    for target in targets:
        port, region = target.split("=")
        url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=5).read()
            healthy = 1
        except OSError:
            healthy = 0
        ms = (time.monotonic() - started) * 1000
        data = [{"MetricName": "PluginHealthy", "Dimensions": [{"Name": "Region", "Value": region}], "Value": healthy},
                {"MetricName": "HealthCheckLatency", "Dimensions": [{"Name": "Region", "Value": region}],
                 "Value": ms, "Unit": "Milliseconds"}]
        for entry in basket if healthy else []:
            rtype, sku = entry.split(":")
            sku = sku.split("?")[0]
            body = json.dumps({"resource": {"provider": "aws", "resource_type": rtype, "sku": sku, "region": region}})
            req = urllib.request.Request(f"{url}/finfocus.v1.CostSourceService/GetProjectedCost", body.encode(),
                                         {"Content-Type": "application/json"})
            try:
                answer = json.load(urllib.request.urlopen(req, timeout=5))
            except OSError:
                continue
            dims = [{"Name": "Region", "Value": region}, {"Name": "ResourceType", "Value": rtype},
                    {"Name": "Sku", "Value": sku}]
            data += [{"MetricName": "ProjectedMonthlyCost", "Dimensions": dims, "Value": float(answer.get("costPerMonth", 0))},
                     {"MetricName": "UnitPrice", "Dimensions": dims, "Value": float(answer.get("unitPrice", 0))}]
        cw.put_metric_data(Namespace=ns, MetricData=data)


if __name__ == "__main__":
    main()
