#!/usr/bin/env python3
"""`make demo`: LocalStack's CloudWatch, the sample fleet on 8001-8010 (v0.1.8 layout), one
agent cycle, then what CloudWatch holds, a line per region."""

import sys

from harness import Agent, Fleet, LocalStack, Reader, agent_env

NAMESPACE = "FinFocus/Plugins"
BASKET = "ec2:t3.micro,ec2:m5.large,ebs:gp3?size=100"


def main():
    localstack = LocalStack().start()
    fleet = Fleet(layout="v0.1.8", base_port=8001)
    try:
        fleet.start()
        env = agent_env(localstack.url, NAMESPACE, COST_RESOURCES=BASKET)
        env.pop("CLOUDWATCH_NAMESPACE")  # the default namespace, as a user would run it
        agent = Agent(env, args=["--once"])
        code = agent.run(120)
        [cycle] = agent.cycles() or [{}]
        print(f"agent --once exited {code}: {cycle.get('targets')} ports probed, "
              f"{cycle.get('healthy')} healthy regions, {cycle.get('published')} datums published "
              f"in {cycle.get('duration_ms')} ms\n")
        if code != 0:
            print("\n".join(agent.lines[-20:]), file=sys.stderr)
            return code
        show(Reader(localstack.url))
    finally:
        fleet.stop()
        localstack.stop()
    return 0


def show(reader):
    metrics = reader.metrics(NAMESPACE)
    regions = sorted({dict(d)["Region"] for n, d in metrics if n == "PluginHealthy"})
    print(f"CloudWatch namespace {NAMESPACE}: {len(metrics)} metrics")
    header = f"{'region':<16}{'healthy':>8}{'latency ms':>12}{'t3.micro $/mo':>15}{'m5.large $/mo':>15}{'gp3 100GB $/mo':>16}{'t3.micro gCO2e':>16}"
    print(header)
    print("-" * len(header))

    def last(name, dims):
        pts = reader.points(NAMESPACE, name, dims)
        return pts[-1][1] if pts else float("nan")

    for r in regions:
        cost = lambda t, s: last("ProjectedMonthlyCost", {"Region": r, "ResourceType": t, "Sku": s})  # noqa: E731
        print(f"{r:<16}{last('PluginHealthy', {'Region': r}):>8.0f}"
              f"{last('HealthCheckLatency', {'Region': r}):>12.2f}"
              f"{cost('ec2', 't3.micro'):>15.3f}{cost('ec2', 'm5.large'):>15.3f}{cost('ebs', 'gp3'):>16.2f}"
              f"{last('CarbonFootprint', {'Region': r, 'ResourceType': 'ec2', 'Sku': 't3.micro'}):>16.1f}")
    for agent in sorted({dict(d)["Agent"] for n, d in metrics if n == "CycleDuration"}):
        dims = {"Agent": agent}
        print(f"\nself metrics, Agent={agent}: CycleDuration {last('CycleDuration', dims):.0f} ms, "
              f"DatumsPublished {last('DatumsPublished', dims):.0f}, QueueDepth {last('QueueDepth', dims):.0f}, "
              f"PublishFailures {last('PublishFailures', dims):.0f}")


if __name__ == "__main__":
    sys.exit(main())
