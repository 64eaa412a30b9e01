#!/usr/bin/env python3
"""A Prometheus endpoint scraped and published by a short script: prometheus_client's parser
and boto3, gauges and counter totals as they are, 1000 datums per PutMetricData.
Usage: scrape_boto3.py NAMESPACE URL"""

import sys
import urllib.request

import boto3
from prometheus_client.parser import text_string_to_metric_families


def main():
    ns, url = sys.argv[1], sys.argv[2]
    text = urllib.request.urlopen(url, timeout=30).read().decode()
    data = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            dims = [{"Name": k, "Value": v} for k, v in sorted(s.labels.items())][:30]
            data.append({"MetricName": s.name, "Dimensions": dims, "Value": s.value})
    cw = boto3.client("cloudwatch")
    for i in range(0, len(data), 1000):
        cw.put_metric_data(Namespace=ns, MetricData=data[i:i + 1000])
    print(len(data), -(-len(data) // 1000))


if __name__ == "__main__":
    main()
