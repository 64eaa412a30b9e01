//! Throughput of the pipeline's pure stages on a synthetic exposition of gauges, counters
//! and histograms, as a large exporter serves it: lines parsed, metrics converted, datums
//! validated and batched, SDK datums built, and buffer records encoded and decoded.
//! `make bench` runs these and writes the figures to docs/performance.md.

use std::time::{Duration, SystemTime};

use cloudwatch_publisher::bench::{
    Format, Rules, State, convert, decode, encode, parse, to_datums, validate_and_batch,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// `n` series: half gauges, three tenths counters, a fifth histograms of five buckets.
/// `round` moves the counters and histograms, as successive scrapes do.
pub fn exposition(n: usize, round: u64) -> String {
    let (gauges, counters) = (n / 2, n * 3 / 10);
    let histograms = n - gauges - counters;
    let mut out = String::with_capacity(n * 80);
    out.push_str("# TYPE scale_temperature gauge\n");
    for i in 0..gauges {
        out.push_str(&format!(
            "scale_temperature{{sensor=\"s{i}\",rack=\"r{}\"}} {}.5\n",
            i % 40,
            i % 90
        ));
    }
    out.push_str("# TYPE scale_requests_total counter\n");
    for i in 0..counters {
        out.push_str(&format!(
            "scale_requests_total{{handler=\"h{i}\"}} {}\n",
            1000 + round * (i as u64 % 7 + 1)
        ));
    }
    out.push_str("# TYPE scale_latency_seconds histogram\n");
    for i in 0..histograms {
        let r = round as f64;
        for (le, c) in [
            ("0.01", 1.0),
            ("0.1", 3.0),
            ("1", 6.0),
            ("10", 8.0),
            ("+Inf", 9.0),
        ] {
            out.push_str(&format!(
                "scale_latency_seconds_bucket{{route=\"p{i}\",le=\"{le}\"}} {}\n",
                c * (r + 1.0)
            ));
        }
        out.push_str(&format!(
            "scale_latency_seconds_sum{{route=\"p{i}\"}} {}\n",
            4.2 * (r + 1.0)
        ));
        out.push_str(&format!(
            "scale_latency_seconds_count{{route=\"p{i}\"}} {}\n",
            9.0 * (r + 1.0)
        ));
    }
    out
}

fn rules() -> Rules {
    Rules {
        region: Some("us-east-1".into()),
        max_series: 1_000_000,
        ..Rules::default()
    }
}

/// The metrics of a second scrape (the first only sets the counters' baselines).
fn metrics(n: usize) -> Vec<cloudwatch_publisher::bench::Metric> {
    let now = SystemTime::now();
    let mut state = State::default();
    convert(
        &parse(&exposition(n, 0), Format::Text),
        &rules(),
        &mut state,
        now,
    );
    convert(
        &parse(&exposition(n, 1), Format::Text),
        &rules(),
        &mut state,
        now,
    )
    .metrics
}

fn stages(c: &mut Criterion) {
    let sizes = [1_000usize, 10_000];
    let mut g = c.benchmark_group("parse");
    for &n in &sizes {
        let text = exposition(n, 1);
        g.throughput(Throughput::Elements(text.lines().count() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &text, |b, t| {
            b.iter(|| parse(t, Format::Text))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("convert");
    for &n in &sizes {
        let bodies = (exposition(n, 0), exposition(n, 1));
        let (first, second) = (
            parse(&bodies.0, Format::Text),
            parse(&bodies.1, Format::Text),
        );
        let out = metrics(n).len();
        g.throughput(Throughput::Elements(out as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_batched(
                || {
                    let mut state = State::default();
                    convert(&first, &rules(), &mut state, SystemTime::now());
                    state
                },
                |mut state| convert(&second, &rules(), &mut state, SystemTime::now()),
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.finish();

    let mut g = c.benchmark_group("validate_and_batch");
    for &n in &sizes {
        let ms = metrics(n);
        g.throughput(Throughput::Elements(ms.len() as u64));
        g.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| validate_and_batch(&ms, "Bench/Scale", SystemTime::now()))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("sdk_datums");
    let ms = metrics(10_000);
    g.throughput(Throughput::Elements(ms.len() as u64));
    g.bench_function("10000", |b| b.iter(|| to_datums(&ms)));
    g.finish();

    let mut g = c.benchmark_group("record");
    let frame = encode(&ms);
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("encode", |b| b.iter(|| encode(&ms)));
    g.bench_function("decode", |b| b.iter(|| decode(&frame)));
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = stages
}
criterion_main!(benches);
