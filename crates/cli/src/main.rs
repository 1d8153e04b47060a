//! `exacta`: the one binary. `exacta serve` runs a Kafka-compatible broker.

mod admin;
mod cluster_status;
mod data;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use exacta_broker::{BrokerConfig, Server};

#[derive(Parser)]
#[command(
    name = "exacta",
    version,
    about = "Kafka-compatible event streaming with exactly-once processing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: `text` (human, the default) or `json` (one object per line).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the broker (single node, durable log on local disk).
    Serve(ServeArgs),
    /// Run a Kafka-aware fault-injecting proxy in front of a broker (for chaos tests).
    Proxy(ProxyArgs),
    /// Topics: list, describe (offsets, LSO lag, configs), create, delete, alter-config.
    Topic {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: admin::TopicCommand,
    },
    /// Consumer groups: list, describe (lag per partition), delete.
    Group {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: admin::GroupCommand,
    },
    /// Transactions: list, describe, producers, find-hanging, abort.
    Txn {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: admin::TxnCommand,
    },
    /// The cluster: nodes, leaders, under-replicated and offline partitions.
    Cluster {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        command: cluster_status::ClusterCommand,
    },
    /// Write lines from stdin to a topic (key before --key-separator, headers).
    Produce {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        args: data::ProduceArgs,
    },
    /// Print a topic's records to its end (read_committed by default).
    Consume {
        #[command(flatten)]
        target: Target,
        #[command(flatten)]
        args: data::ConsumeArgs,
    },
    /// Prove exactly-once end to end against a broker (runs `exacta-verify`; see
    /// `exacta verify --help`).
    #[command(disable_help_flag = true)]
    Verify {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Exactly-once sinks: `exacta sink postgres` writes topics into a PostgreSQL table
    /// with the offsets in the same transaction (runs `exacta-sink`; see docs/sink.md).
    #[command(disable_help_flag = true)]
    Sink {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Benchmark a broker (runs `exacta-bench`; see `exacta bench --help`).
    #[command(disable_help_flag = true)]
    Bench {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
}

/// Where admin commands go and how they answer.
#[derive(clap::Args)]
struct Target {
    /// Any Kafka-compatible cluster (comma-separated bootstrap addresses).
    #[arg(long, global = true, default_value = "127.0.0.1:9092")]
    bootstrap_server: String,
    /// `table` for people, `json` for scripts.
    #[arg(long, global = true, value_enum, default_value_t = admin::Output::Table)]
    output: admin::Output,
}

#[derive(clap::Args)]
struct ProxyArgs {
    /// Address to listen on.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:0")]
    listen: String,
    /// The broker to forward to.
    #[arg(long, value_name = "HOST:PORT")]
    upstream: String,
    /// Address clients are told to reconnect to [default: the listen address].
    #[arg(long, value_name = "HOST:PORT")]
    advertised_listener: Option<String>,
    /// Drop the response of an API with a probability and cut the connection, e.g.
    /// `produce=0.05`. Repeatable.
    #[arg(long = "drop-response", value_name = "API=RATE")]
    drop_response: Vec<String>,
    /// Hold requests of an API for a random 0..=MAX_MS before forwarding them, e.g.
    /// `end_txn=5000`. Repeatable.
    #[arg(long = "delay", value_name = "API=MAX_MS")]
    delay: Vec<String>,
    /// Answer requests of an API with an error instead of forwarding them, e.g.
    /// `end_txn=0.1:NOT_COORDINATOR,COORDINATOR_LOAD_IN_PROGRESS`. Repeatable.
    #[arg(long = "inject-error", value_name = "API=RATE:ERROR[,ERROR...]")]
    inject_error: Vec<String>,
    /// Also send a copy of a request on another connection after 0..=MS, e.g.
    /// `produce=0.05:500`. Repeatable.
    #[arg(long = "duplicate", value_name = "API=RATE:MS")]
    duplicate: Vec<String>,
    /// Freeze the connection for MS (nothing forwarded), then cut it, e.g.
    /// `end_txn=0.02:3000`. Repeatable.
    #[arg(long = "blackhole", value_name = "API=RATE:MS")]
    blackhole: Vec<String>,
    /// A TOML scenario file with the same rules as lists (`drop_response`, `delay`,
    /// `inject_error`, `duplicate`, `blackhole`) and `seed`; flags add to it.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Seed of the fault decisions, to replay a run [default: 1, or the scenario's].
    #[arg(long)]
    seed: Option<u64>,
}

/// A proxy scenario file.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Scenario {
    seed: Option<u64>,
    #[serde(default)]
    drop_response: Vec<String>,
    #[serde(default)]
    delay: Vec<String>,
    #[serde(default)]
    inject_error: Vec<String>,
    #[serde(default)]
    duplicate: Vec<String>,
    #[serde(default)]
    blackhole: Vec<String>,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML config file; flags override its values.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:9092].
    #[arg(long, value_name = "HOST:PORT")]
    listen: Option<String>,
    /// Address given to clients in Metadata [default: the listen address].
    #[arg(long, value_name = "HOST:PORT")]
    advertised_listener: Option<String>,
    /// Data directory [default: ./exacta-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics [default: off].
    #[arg(long, value_name = "HOST:PORT")]
    metrics_listen: Option<String>,
    /// This broker's id (in a cluster, its id in --voters) [default: 0].
    #[arg(long, value_name = "ID")]
    node_id: Option<i32>,
    /// Join a cluster: the metadata quorum's voters, the same list on every node
    /// [default: none, a single node].
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    voters: Option<String>,
    /// Address of this node's cluster port [default: its address in --voters].
    #[arg(long, value_name = "HOST:PORT")]
    cluster_listen: Option<String>,
}

fn main() {
    if let Err(e) = run() {
        // The chain of causes on one line, without a backtrace: this is for people.
        eprintln!("exacta: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("EXACTA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => logs.json().with_ansi(false).init(),
    }
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Proxy(args) => proxy(args),
        Command::Topic { target, command } => admin_command(target, |cluster, output| {
            Box::pin(admin::topic(cluster, command, output))
        }),
        Command::Group { target, command } => admin_command(target, |cluster, output| {
            Box::pin(admin::group(cluster, command, output))
        }),
        Command::Txn { target, command } => admin_command(target, |cluster, output| {
            Box::pin(admin::txn(cluster, command, output))
        }),
        Command::Cluster { target, command } => admin_command(target, |cluster, output| {
            Box::pin(cluster_status::run(cluster, command, output))
        }),
        Command::Produce { target, args } => {
            admin_command(target, |cluster, _| Box::pin(data::produce(cluster, args)))
        }
        Command::Consume { target, args } => {
            admin_command(target, |cluster, _| Box::pin(data::consume(cluster, args)))
        }
        Command::Verify { args } => external("exacta-verify", args),
        Command::Bench { args } => external("exacta-bench", args),
        Command::Sink { args } => external("exacta-sink", args),
    }
}

type AdminFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + 'a>>;

/// Connects to the cluster and runs one admin command on a small runtime.
fn admin_command(
    target: Target,
    run: impl for<'a> FnOnce(&'a mut exacta_client::Cluster, admin::Output) -> AdminFuture<'a>,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let mut cluster = exacta_client::Cluster::connect(&target.bootstrap_server).await?;
        run(&mut cluster, target.output).await
    })
}

/// Runs a tool built as its own binary next to this one (they link librdkafka, which the
/// broker binary does not), replacing this process.
fn external(name: &str, args: Vec<std::ffi::OsString>) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let me = std::env::current_exe().context("locating the exacta binary")?;
    let tool = me.with_file_name(name);
    let error = std::process::Command::new(&tool).args(args).exec();
    Err(error).with_context(|| {
        format!(
            "running {} (build it with `cargo build --release --bin {name}`)",
            tool.display()
        )
    })
}

fn proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let mut scenario = match &args.scenario {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            toml::from_str::<Scenario>(&text)
                .with_context(|| format!("parsing scenario {}", path.display()))?
        }
        None => Scenario::default(),
    };
    scenario.drop_response.extend(args.drop_response);
    scenario.delay.extend(args.delay);
    scenario.inject_error.extend(args.inject_error);
    scenario.duplicate.extend(args.duplicate);
    scenario.blackhole.extend(args.blackhole);
    let mut faults = exacta_chaos::FaultConfig {
        seed: args.seed.or(scenario.seed).unwrap_or(1),
        ..Default::default()
    };
    let rule = anyhow::Error::msg;
    for r in &scenario.drop_response {
        let (api, rate) = exacta_chaos::parse_drop_rule(r).map_err(rule)?;
        faults.drop_response.insert(api, rate);
    }
    for r in &scenario.delay {
        let (api, ms) = exacta_chaos::parse_delay_rule(r).map_err(rule)?;
        faults.delay.insert(api, ms);
    }
    for r in &scenario.inject_error {
        let (api, how) = exacta_chaos::parse_inject_rule(r).map_err(rule)?;
        faults.inject_error.insert(api, how);
    }
    for r in &scenario.duplicate {
        let (api, how) = exacta_chaos::parse_rate_ms_rule(r).map_err(rule)?;
        faults.duplicate.insert(api, how);
    }
    for r in &scenario.blackhole {
        let (api, how) = exacta_chaos::parse_rate_ms_rule(r).map_err(rule)?;
        faults.blackhole.insert(api, how);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let proxy = exacta_chaos::Proxy::bind(
            &args.listen,
            args.upstream,
            args.advertised_listener,
            faults,
        )
        .await
        .context("starting the proxy")?;
        proxy.run(shutdown_signal()).await;
        Ok(())
    })
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => BrokerConfig::from_file(path)?,
        None => BrokerConfig::default(),
    };
    if let Some(listen) = args.listen {
        config.listen = listen;
        config.explicit.insert("listen".into());
    }
    if let Some(advertised) = args.advertised_listener {
        config.advertised_listener = Some(advertised);
        config.explicit.insert("advertised_listener".into());
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = dir;
        config.explicit.insert("data_dir".into());
    }
    if let Some(metrics) = args.metrics_listen {
        config.metrics_listen = Some(metrics);
        config.explicit.insert("metrics_listen".into());
    }
    if let Some(id) = args.node_id {
        config.node_id = id;
        config.explicit.insert("node_id".into());
    }
    if let Some(voters) = args.voters {
        config.voters = Some(voters);
        config.explicit.insert("voters".into());
    }
    if let Some(address) = args.cluster_listen {
        config.cluster_listen = Some(address);
        config.explicit.insert("cluster_listen".into());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("exacta-worker")
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async {
        let server = Server::bind(config).await.context("starting the broker")?;
        server
            .run(shutdown_signal())
            .await
            .context("running the broker")
    })
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            std::future::pending::<()>().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
