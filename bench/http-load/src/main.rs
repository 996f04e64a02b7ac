//! `bench-http-load`: an open-loop HTTP load generator for the API benchmark (bench/api.sh).
//! Requests start on a fixed schedule (`--rate` per second), not when the previous one
//! answers, so a slow server shows up as latency rather than as a lower rate (no coordinated
//! omission). Each latency runs from the request's scheduled start to the end of its body.
//! After `--warmup` the rest are measured; the result is printed as `key=value` lines:
//! requests, errors (transport failures and non-2xx), the achieved rate, p50, p99 and max.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

/// Open-loop HTTP load at a fixed rate.
#[derive(Debug, Parser)]
#[command(name = "bench-http-load")]
struct Args {
    /// The URL to request.
    #[arg(long)]
    url: String,
    /// GET or POST.
    #[arg(long, default_value = "GET")]
    method: String,
    /// A JSON body for POST, read from this file.
    #[arg(long)]
    body_file: Option<std::path::PathBuf>,
    /// A bearer token.
    #[arg(long, env = "BENCH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Requests started per second.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Seconds measured (after the warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Seconds of load before measuring (connections opened, caches warm).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
}

#[derive(Default)]
struct Samples {
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.rate == 0 || args.seconds == 0 {
        bail!("--rate and --seconds must be at least 1");
    }
    let body = match &args.body_file {
        Some(path) => Some(std::fs::read(path).with_context(|| format!("reading {}", path.display()))?),
        None => None,
    };
    let method: reqwest::Method = args.method.parse().context("--method")?;
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(256).timeout(Duration::from_secs(10)).build()?;
    let samples = Arc::new(Mutex::new(Samples::default()));
    let period = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let end = measure_from + Duration::from_secs(args.seconds);
    let mut inflight = JoinSet::new();
    loop {
        let scheduled = ticker.tick().await.into_std();
        if scheduled >= end {
            break;
        }
        let mut request = client.request(method.clone(), &args.url);
        if let Some(token) = &args.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = &body {
            request = request.header("content-type", "application/json").body(body.clone());
        }
        let samples = Arc::clone(&samples);
        inflight.spawn(async move {
            let outcome = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    match response.bytes().await {
                        Ok(_) if status.is_success() => Ok(()),
                        Ok(_) => Err(format!("status {status}")),
                        Err(err) => Err(err.to_string()),
                    }
                }
                Err(err) => Err(err.to_string()),
            };
            let latency = scheduled.elapsed();
            if scheduled < measure_from {
                return;
            }
            let mut samples = samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            match outcome {
                Ok(()) => samples.latencies_us.push(latency.as_micros() as u64),
                Err(err) => {
                    samples.errors += 1;
                    samples.first_error.get_or_insert(err);
                }
            }
        });
        while inflight.try_join_next().is_some() {}
    }
    while inflight.join_next().await.is_some() {}
    let mut samples = samples.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    samples.latencies_us.sort_unstable();
    let done = samples.latencies_us.len() as u64;
    println!("requests={}", done + samples.errors);
    println!("errors={}", samples.errors);
    println!("rate={:.0}", (done + samples.errors) as f64 / args.seconds as f64);
    println!("p50_ms={:.2}", percentile(&samples.latencies_us, 50.0));
    println!("p99_ms={:.2}", percentile(&samples.latencies_us, 99.0));
    println!("max_ms={:.2}", percentile(&samples.latencies_us, 100.0));
    if let Some(err) = &samples.first_error {
        println!("first_error={}", err.replace('\n', " "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_are_nearest_rank_in_milliseconds() {
        let sorted: Vec<u64> = (1..=100).map(|ms| ms * 1000).collect();
        assert_eq!(percentile(&sorted, 50.0), 50.0);
        assert_eq!(percentile(&sorted, 99.0), 99.0);
        assert_eq!(percentile(&sorted, 100.0), 100.0);
        assert!(percentile(&[], 50.0).is_nan());
    }
}
