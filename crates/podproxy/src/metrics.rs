//! podproxy's Prometheus metrics: requests by route and status class, latency, upstream
//! connect errors, open connections (upgraded ones also on their own).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub class: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub route: String,
}

fn latency_histogram() -> Histogram {
    // 0.5ms .. ~16s
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0005, 2.0, 16,
    ))
}

#[derive(Debug)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
    pub upstream_connect_errors: Counter,
    pub open_connections: Gauge,
    pub upgraded_connections: Gauge,
}

impl Metrics {
    pub fn new() -> (Metrics, Registry) {
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            upstream_connect_errors: Counter::default(),
            open_connections: Gauge::default(),
            upgraded_connections: Gauge::default(),
        };
        let mut r = Registry::with_prefix("podproxy");
        r.register(
            "requests",
            "Requests by route and status class",
            m.requests.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Time to the response head, by route",
            m.latency.clone(),
        );
        r.register(
            "upstream_connect_errors",
            "Upstream connections that failed",
            m.upstream_connect_errors.clone(),
        );
        r.register(
            "open_connections",
            "Client connections open now, upgraded ones included",
            m.open_connections.clone(),
        );
        r.register(
            "upgraded_connections",
            "Upgraded client connections (WebSocket and other tunnels) open now",
            m.upgraded_connections.clone(),
        );
        (m, r)
    }

    /// The series of one route, looked up once so that a request only increments.
    pub fn for_route(&self, route: &str) -> RouteMetrics {
        let class = |c: &str| {
            self.requests
                .get_or_create(&RequestLabels {
                    route: route.to_string(),
                    class: c.to_string(),
                })
                .clone()
        };
        RouteMetrics {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            latency: self
                .latency
                .get_or_create(&RouteLabel {
                    route: route.to_string(),
                })
                .clone(),
        }
    }
}

/// One route's request counters (by status class) and latency histogram.
#[derive(Debug, Clone)]
pub struct RouteMetrics {
    by_class: [Counter; 5],
    latency: Histogram,
}

impl RouteMetrics {
    pub fn request(&self, status: u16, took: Duration) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.by_class[class].inc();
        self.latency.observe(took.as_secs_f64());
    }
}
