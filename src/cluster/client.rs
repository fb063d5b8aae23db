//! The connection to Redis: one server (`redis://`, `rediss://`) or a Redis Cluster
//! (`redis+cluster://h1:p1,h2:p2`, `rediss+cluster://…`), behind one type that the store's
//! Redis backend and the cluster threads both use. Blocking: it is only ever used on
//! threads of its own, never on a shard.

use std::time::Duration;

use redis::cluster::{ClusterClient, ClusterConnection};
use redis::ConnectionLike;

/// Where Redis is, parsed from `cluster.redis`.
#[derive(Clone)]
pub struct Target {
    kind: Kind,
    /// The server's (or the first seed's) address, TLS and credentials: what a
    /// connection to one node of a Redis Cluster copies.
    node: redis::ConnectionInfo,
}

#[derive(Clone)]
enum Kind {
    Single(redis::Client),
    Cluster(ClusterClient),
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the URL: it may hold a password.
        f.write_str(if self.is_cluster() {
            "Target(cluster)"
        } else {
            "Target(single)"
        })
    }
}

/// One open connection.
pub enum Conn {
    Single(redis::Connection),
    Cluster(Box<ClusterConnection>),
}

fn why(e: redis::RedisError) -> String {
    format!("{:?}", e.kind())
}

impl Target {
    /// Parses `url`; the error says what is wrong without repeating the URL (it may hold a
    /// password).
    pub fn parse(url: &str, timeout: Duration) -> Result<Target, String> {
        let cluster = url
            .strip_prefix("redis+cluster://")
            .map(|rest| ("redis", rest))
            .or_else(|| url.strip_prefix("rediss+cluster://").map(|r| ("rediss", r)));
        let Some((scheme, rest)) = cluster else {
            let client =
                redis::Client::open(url).map_err(|e| format!("not a Redis URL ({})", why(e)))?;
            let node = client.get_connection_info().clone();
            return Ok(Target {
                kind: Kind::Single(client),
                node,
            });
        };
        // Credentials and database, if any, go before the hosts and hold for every seed:
        // redis+cluster://user:pass@h1:p1,h2:p2
        let (auth, hosts) = match rest.rsplit_once('@') {
            Some((a, h)) => (format!("{a}@"), h),
            None => (String::new(), rest),
        };
        let seeds: Vec<String> = hosts
            .trim_end_matches('/')
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("{scheme}://{auth}{h}"))
            .collect();
        let Some(first) = seeds.first() else {
            return Err("a Redis Cluster URL needs at least one host:port".into());
        };
        let node = redis::IntoConnectionInfo::into_connection_info(first.as_str())
            .map_err(|e| format!("not a Redis Cluster seed list ({})", why(e)))?;
        let client = ClusterClient::builder(seeds)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2)
            .build()
            .map_err(|e| format!("not a Redis Cluster seed list ({})", why(e)))?;
        Ok(Target {
            kind: Kind::Cluster(client),
            node,
        })
    }

    pub fn is_cluster(&self) -> bool {
        matches!(self.kind, Kind::Cluster(_))
    }

    /// A new connection, with `timeout` on connecting, reads and writes.
    pub fn connect(&self, timeout: Duration) -> redis::RedisResult<Conn> {
        match &self.kind {
            Kind::Single(c) => {
                let con = c.get_connection_with_timeout(timeout)?;
                con.set_read_timeout(Some(timeout))?;
                con.set_write_timeout(Some(timeout))?;
                Ok(Conn::Single(con))
            }
            Kind::Cluster(c) => {
                let con = c.get_connection()?;
                con.set_read_timeout(Some(timeout))?;
                con.set_write_timeout(Some(timeout))?;
                Ok(Conn::Cluster(Box::new(con)))
            }
        }
    }

    /// A plain connection to one node, `(host, port)`, with this target's TLS and
    /// credentials: on a Redis Cluster, the subscriber's connection to the master that
    /// owns a channel's slot. `None`: the server itself (one server).
    /// With `resp3`, the connection speaks RESP3, where what a subscription receives
    /// arrives as push messages, apart from replies.
    pub fn connect_node(
        &self,
        node: Option<(&str, u16)>,
        resp3: bool,
        timeout: Duration,
    ) -> redis::RedisResult<redis::Connection> {
        let mut info = self.node.clone();
        if resp3 {
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(redis::ProtocolVersion::RESP3);
            info = info.set_redis_settings(settings);
        }
        if let Some((host, port)) = node {
            let addr = match info.addr() {
                redis::ConnectionAddr::TcpTls {
                    insecure,
                    tls_params,
                    ..
                } => redis::ConnectionAddr::TcpTls {
                    host: host.to_string(),
                    port,
                    insecure: *insecure,
                    tls_params: tls_params.clone(),
                },
                _ => redis::ConnectionAddr::Tcp(host.to_string(), port),
            };
            info = info.set_addr(addr);
        }
        let con = redis::Client::open(info)?.get_connection_with_timeout(timeout)?;
        con.set_read_timeout(Some(timeout))?;
        con.set_write_timeout(Some(timeout))?;
        Ok(con)
    }
}

impl Conn {
    /// The connection as the `redis` crate's commands take it.
    pub fn like(&mut self) -> &mut dyn ConnectionLike {
        match self {
            Conn::Single(c) => c,
            Conn::Cluster(c) => &mut **c,
        }
    }
}
