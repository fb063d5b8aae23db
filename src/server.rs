//! `liveshard serve`: bind, start the shards, wait for a signal, drain, exit.
//!
//! Runs on the main thread, which never touches a connection: it binds the listener groups
//! (so a bad address is an error before any thread starts), starts the engine, prints one
//! ready line on stdout, then blocks on SIGINT/SIGTERM. On the first signal it asks every
//! shard to stop and waits up to `server.shutdown_timeout_ms`; a second signal, or the
//! bound running out, ends the process at once. SIGHUP reads the HTTPS certificate and key
//! again (new handshakes get them; open connections keep theirs).

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::app::{Common, ShardMsg};
use crate::config::{Config, DriverChoice};
use crate::metrics::Metrics;
use crate::shard::{self, Seed};

pub fn run(config: Config) -> Result<(), String> {
    let shard_count = config.shard_count();
    std::fs::create_dir_all(&config.server.data_dir).map_err(|e| {
        format!(
            "cannot create data dir {}: {e}",
            config.server.data_dir.display()
        )
    })?;
    // Registered before any shard runs, so an early signal is a clean stop, not a kill.
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;

    let wanted = match config.server.driver {
        DriverChoice::Auto => shards::Driver::Auto,
        DriverChoice::Uring => shards::Driver::Uring,
        DriverChoice::Epoll => shards::Driver::Epoll,
    };
    let engine_cfg = shards::EngineConfig {
        shards: shard_count,
        driver: wanted,
        pin: config.server.pin,
        ring_capacity: config.mesh.ring_capacity,
        backlog_capacity: config.mesh.backlog_capacity,
        ..shards::EngineConfig::default()
    };
    let driver = shards::engine::resolve_driver(wanted, engine_cfg.uring_entries)
        .map_err(|e| e.to_string())?;
    if wanted == shards::Driver::Auto && driver == shards::DriverInUse::Epoll {
        tracing::warn!("io_uring is not available here; falling back to epoll");
    }

    let http = shards::listener::bind_group(
        config.server.http,
        shard_count,
        shards::listener::DEFAULT_BACKLOG,
    )
    .map_err(|e| format!("HTTP listener: {e}"))?;
    let http_addr = http[0].local_addr().map_err(|e| e.to_string())?;
    let rtmp = shards::listener::bind_group(
        config.server.rtmp,
        shard_count,
        shards::listener::DEFAULT_BACKLOG,
    )
    .map_err(|e| format!("RTMP listener: {e}"))?;
    let rtmp_addr = rtmp[0].local_addr().map_err(|e| e.to_string())?;
    // HTTPS: the certificate is read before anything listens, so a bad one stops the start.
    let (tls, https) = match config.server.https_addr() {
        Some(addr) => {
            let front =
                crate::tls::TlsFront::load(&config.server.tls_cert, &config.server.tls_key)?;
            let group =
                shards::listener::bind_group(addr, shard_count, shards::listener::DEFAULT_BACKLOG)
                    .map_err(|e| format!("HTTPS listener: {e}"))?;
            let group: Vec<Option<std::net::TcpListener>> = group.into_iter().map(Some).collect();
            (Some(Arc::new(front)), group)
        }
        None => (None, (0..shard_count).map(|_| None).collect()),
    };
    let https_addr = https
        .first()
        .and_then(|l| l.as_ref())
        .map(|l| l.local_addr().map_err(|e| e.to_string()))
        .transpose()?;
    let seeds: Vec<Seed> = http
        .into_iter()
        .zip(rtmp)
        .zip(https)
        .map(|((http, rtmp), https)| Seed { http, rtmp, https })
        .collect();

    let danmaku = crate::danmaku::Shared::from_config(&config)?;
    let secret =
        crate::auth::load_or_create_secret(&config.auth.jwt_secret, &config.server.data_dir)
            .map_err(|e| format!("token secret: {e}"))?;
    let jwt = Arc::new(crate::auth::Jwt::new(
        secret,
        config.auth.jwt_issuer.clone(),
    ));
    // Under `cluster.redis` the nodes share their store in Redis; a Redis that is not
    // there yet does not stop the node (each request connects again; REST answers 503
    // meanwhile).
    let backend: Box<dyn crate::store::Backend> = if config.cluster.enabled() {
        Box::new(
            crate::store::redis::RedisBackend::open(
                &config.cluster.redis,
                std::time::Duration::from_millis(config.cluster.command_timeout_ms.max(1)),
                config.store.history_per_room,
            )
            .map_err(|e| format!("cluster.redis: {e}"))?,
        )
    } else {
        Box::new(
            crate::store::embedded::Embedded::open(
                &config.server.data_dir,
                config.store.history_per_room,
                true,
            )
            .map_err(|e| {
                format!(
                    "cannot open the store in {}: {e}",
                    config.server.data_dir.display()
                )
            })?,
        )
    };
    let mut store = crate::store::Store::new(backend, config.store.queue);
    let revoked = match store.revocations_at_start(crate::auth::now_unix()) {
        Ok(r) => r,
        // Redis down at start: the node starts without the stored revocations (the ones
        // made from now on still reach it) rather than not at all.
        Err(crate::store::StoreError::Unavailable) => {
            tracing::warn!("storage unreachable: starting without the stored token revocations");
            Vec::new()
        }
        Err(e) => return Err(format!("cannot read the token revocations: {e}")),
    };
    let revoked = crate::auth::Revoked::from_list(revoked);
    let outbound = crate::outbound::Outbound::start(
        &crate::outbound::OutboundSettings::from_config(&config.outbound),
    )
    .map_err(|e| format!("cannot start the outbound threads: {e}"))?;
    let (api, api_services) = crate::api::Services::start(&config, http_addr, rtmp_addr)?;
    let mut live = crate::live::Settings::from_config(&config)?;
    live.recorder = Some(api.recordings.clone());
    // Streams across nodes: the cluster-media thread, only with cluster.redis.
    let cluster_media = if config.cluster.enabled() {
        let (node, advertise) = crate::cluster::media::identity(&config.cluster, http_addr);
        let (handle, thread) = crate::cluster::media::start(&config.cluster, &node, &advertise)?;
        tracing::info!(node, advertise, "cluster: stream claims in Redis");
        if config.cluster.key.is_empty() {
            tracing::warn!(
                "cluster.key is empty: a node pulling a stream from this one gets the \
                 ordinary play checks (signature, Referer list, hooks)"
            );
        }
        live.cluster = Some(handle);
        Some(thread)
    } else {
        None
    };
    let mut cluster = crate::cluster::Cluster::new(
        &config.cluster,
        shard_count,
        config.store.history_per_room,
        http_addr,
    )?;
    let common = Arc::new(Common {
        cluster: cluster.as_ref().map(|c| c.handle()),
        store: store.handle(),
        outbound: outbound.handle(),
        api: Arc::new(api),
        jwt,
        metrics: Arc::new(Metrics::new(
            shard_count,
            driver,
            crate::routes::router(&config).routes().map(|(_, p)| p),
        )),
        danmaku: Arc::new(danmaku),
        live: Arc::new(live),
        revoked,
        tls: tls.clone(),
        config: Arc::new(config),
    });
    let engine = {
        let common = common.clone();
        shards::start::<ShardMsg, Seed, _, _>(
            shards::EngineConfig {
                driver: match driver {
                    shards::DriverInUse::Uring => shards::Driver::Uring,
                    shards::DriverInUse::Epoll => shards::Driver::Epoll,
                },
                ..engine_cfg
            },
            seeds,
            move |ctx, seed| shard::run(ctx, seed, common.clone()),
        )
        .map_err(|e| e.to_string())?
    };

    store
        .start(crate::app::commit_sink(engine.remotes()))
        .map_err(|e| format!("cannot start the store thread: {e}"))?;
    if let Some(c) = cluster.as_mut() {
        c.start(crate::app::cluster_sink(engine.remotes()))
            .map_err(|e| format!("cannot start the cluster threads: {e}"))?;
    }
    let https_field = https_addr
        .map(|a| format!(" https={a}"))
        .unwrap_or_default();
    tracing::info!(%http_addr, %rtmp_addr, https = ?https_addr, shards = shard_count, driver = %driver, "liveshard started");
    // One machine-readable line for scripts and tests that start us on port 0.
    let mut stdout = std::io::stdout();
    let _ = writeln!(
        stdout,
        "liveshard ready http={http_addr} rtmp={rtmp_addr}{https_field} shards={shard_count} driver={driver}"
    );
    let _ = stdout.flush();

    let first = signals.forever().find(|&sig| {
        if sig == SIGHUP {
            reload_tls(tls.as_deref());
        }
        sig != SIGHUP
    });
    tracing::info!(signal = ?first, "shutting down");
    engine.stop();
    let bound = Duration::from_millis(common.config.server.shutdown_timeout_ms);
    let deadline = Instant::now() + bound;
    while !engine.is_finished() {
        if signals.pending().any(|sig| sig != SIGHUP) {
            tracing::warn!("second signal: exiting without waiting for connections");
            return Ok(());
        }
        if Instant::now() >= deadline {
            tracing::warn!(
                bound_ms = bound.as_millis() as u64,
                "shutdown bound reached; exiting with connections still open"
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    engine.join(Duration::from_secs(1));
    // The shards are gone: the store finishes what they queued, then stops.
    drop(common);
    store.join(
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1)),
    );
    api_services.join(Duration::from_secs(1));
    // Every handle went with `common`: the thread lets this node's claims go, then ends.
    if let Some(t) = cluster_media {
        t.join(Duration::from_secs(2));
    }
    outbound.join(Duration::from_secs(1));
    if let Some(c) = cluster.as_mut() {
        c.join(Duration::from_secs(1));
    }
    tracing::info!("stopped");
    Ok(())
}

/// SIGHUP: reads the HTTPS certificate and key again.
fn reload_tls(tls: Option<&crate::tls::TlsFront>) {
    match tls {
        None => tracing::info!("SIGHUP: no HTTPS listener; nothing to reload"),
        Some(front) => match front.reload() {
            Ok(()) => tracing::info!("SIGHUP: HTTPS certificate reloaded; new connections use it"),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: HTTPS certificate not reloaded; the previous one stays")
            }
        },
    }
}
