#!/bin/sh
# The plugin-fleet cycle done the classic way, as cron would run it: curl each regional
# plugin's health and cost, then one `aws cloudwatch put-metric-data` per region.
# Usage: classic.sh NAMESPACE BASKET PORT=REGION...   (BASKET like "ec2:t3.micro ec2:m5.large")
# The endpoint and credentials come from the environment (AWS_ENDPOINT_URL, AWS_*).
set -u
ns=$1; basket=$2; shift 2
for target in "$@"; do
  port=${target%%=*}; region=${target#*=}
  url=http://127.0.0.1:$port
  start=$(date +%s%N)
  if curl -fsS -m 5 -o /dev/null "$url/healthz"; then healthy=1; else healthy=0; fi
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  data="MetricName=PluginHealthy,Dimensions=[{Name=Region,Value=$region}],Value=$healthy"
  data="$data MetricName=HealthCheckLatency,Dimensions=[{Name=Region,Value=$region}],Value=$ms,Unit=Milliseconds"
  if [ "$healthy" = 1 ]; then
    for entry in $basket; do
      type=${entry%%:*}; sku=${entry#*:}; sku=${sku%%\?*}
      answer=$(curl -fsS -m 5 -H 'Content-Type: application/json' \
        -d "{\"resource\":{\"provider\":\"aws\",\"resource_type\":\"$type\",\"sku\":\"$sku\",\"region\":\"$region\"}}" \
        "$url/finfocus.v1.CostSourceService/GetProjectedCost") || continue
      cost=$(printf '%s' "$answer" | sed -n 's/.*"costPerMonth":"\{0,1\}\([0-9.eE+-]*\).*/\1/p')
      price=$(printf '%s' "$answer" | sed -n 's/.*"unitPrice":"\{0,1\}\([0-9.eE+-]*\).*/\1/p')
      dims="[{Name=Region,Value=$region},{Name=ResourceType,Value=$type},{Name=Sku,Value=$sku}]"
      data="$data MetricName=ProjectedMonthlyCost,Dimensions=$dims,Value=${cost:-0}"
      data="$data MetricName=UnitPrice,Dimensions=$dims,Value=${price:-0}"
    done
  fi
  # shellcheck disable=SC2086  # one argument per datum, as the CLI's shorthand wants
  aws cloudwatch put-metric-data --namespace "$ns" --metric-data $data
done
