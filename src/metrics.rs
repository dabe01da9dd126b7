//! Prometheus metrics, one registry per running service (so tests can run several in one
//! process), served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub method: String,
    pub status: String,
}

/// What `POST /webhooks/google/calendar` answers, by name (`http::webhook`).
const WEBHOOK_OUTCOMES: &[&str] =
    &["accepted", "sync", "missing_headers", "unknown_channel", "bad_token", "resource_mismatch", "store_error"];

pub struct Metrics {
    registry: Registry,
    /// Webhook notifications by what became of them.
    pub notifications: Family<OutcomeLabel, Counter>,
    /// The webhook's outcomes, resolved once: counting one takes no lock and no allocation.
    webhook_outcomes: std::collections::HashMap<&'static str, Counter>,
    /// Calendar syncs by outcome.
    pub syncs: Family<OutcomeLabel, Counter>,
    /// Timelines recomputed after a sync, by why (`changed`: the sync stored a change;
    /// `pending`: the job that stored the last change may not have finished recomputing).
    pub timeline_recomputes: Family<OutcomeLabel, Counter>,
    /// Google calls by method and HTTP status (or `network`).
    pub google_calls: Family<CallLabels, Counter>,
    /// Seconds from a notification to the end of the sync that covered it.
    pub sync_lag: Histogram,
    /// Calendars waiting for a sync.
    pub dirty_calendars: Gauge,
    /// Profile-switch delivery attempts to phone systems, by outcome.
    pub deliveries: Family<OutcomeLabel, Counter>,
    /// Profile switches waiting to be delivered.
    pub outbox: Gauge,
    /// Channel renewals by outcome.
    pub renewals: Family<OutcomeLabel, Counter>,
    /// Channels by state (live, due, expired, pending, orphaned).
    pub channels: Family<StateLabel, Gauge>,
    /// Seconds until the soonest live channel expires (negative: one already has).
    pub soonest_expiry: Gauge,
    /// Tenants whose Google token endpoint (`google_token`) or phone system (`phone_system`) is
    /// failing.
    pub tenants_failing: Family<PartLabel, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartLabel {
    pub part: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gwsync");
        let notifications = Family::<OutcomeLabel, Counter>::default();
        registry.register("notifications", "Google push notifications received, by outcome", notifications.clone());
        let syncs = Family::<OutcomeLabel, Counter>::default();
        registry.register("syncs", "Calendar syncs, by outcome", syncs.clone());
        let timeline_recomputes = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "timeline_recomputes",
            "Timelines recomputed after a calendar sync, by why (changed, pending)",
            timeline_recomputes.clone(),
        );
        let google_calls = Family::<CallLabels, Counter>::default();
        registry.register("google_calls", "Calls to Google APIs, by method and status", google_calls.clone());
        let sync_lag = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register("sync_lag_seconds", "Time from a notification to the sync that covered it", sync_lag.clone());
        let dirty_calendars = Gauge::default();
        registry.register("dirty_calendars", "Calendars waiting for a sync", dirty_calendars.clone());
        let deliveries = Family::<OutcomeLabel, Counter>::default();
        registry.register("deliveries", "Profile-switch deliveries to phone systems, by outcome", deliveries.clone());
        let outbox = Gauge::default();
        registry.register("outbox_messages", "Profile switches waiting to be delivered", outbox.clone());
        let renewals = Family::<OutcomeLabel, Counter>::default();
        registry.register("channel_renewals", "Push channel renewals, by outcome", renewals.clone());
        let channels = Family::<StateLabel, Gauge>::default();
        registry.register("channels", "Push channels, by state", channels.clone());
        let soonest_expiry = Gauge::default();
        registry.register(
            "channel_soonest_expiry_seconds",
            "Seconds until the soonest live push channel expires",
            soonest_expiry.clone(),
        );
        let tenants_failing = Family::<PartLabel, Gauge>::default();
        registry.register(
            "tenants_failing",
            "Tenants whose token endpoint (google_token) or phone system (phone_system) is failing",
            tenants_failing.clone(),
        );
        Metrics {
            tenants_failing,
            registry,
            webhook_outcomes: WEBHOOK_OUTCOMES
                .iter()
                .map(|o| (*o, notifications.get_or_create(&OutcomeLabel { outcome: (*o).to_owned() }).clone()))
                .collect(),
            notifications,
            syncs,
            timeline_recomputes,
            google_calls,
            sync_lag,
            dirty_calendars,
            deliveries,
            outbox,
            renewals,
            channels,
            soonest_expiry,
        }
    }

    pub fn notification(&self, outcome: &str) {
        match self.webhook_outcomes.get(outcome) {
            Some(counter) => {
                counter.inc();
            }
            None => {
                self.notifications.get_or_create(&OutcomeLabel { outcome: outcome.to_owned() }).inc();
            }
        }
    }

    pub fn sync(&self, outcome: &str) {
        self.syncs.get_or_create(&OutcomeLabel { outcome: outcome.to_owned() }).inc();
    }

    pub fn timeline_recompute(&self, why: &str) {
        self.timeline_recomputes.get_or_create(&OutcomeLabel { outcome: why.to_owned() }).inc();
    }

    pub fn delivery(&self, outcome: &str) {
        self.deliveries.get_or_create(&OutcomeLabel { outcome: outcome.to_owned() }).inc();
    }

    pub fn renewal(&self, outcome: &str) {
        self.renewals.get_or_create(&OutcomeLabel { outcome: outcome.to_owned() }).inc();
    }

    pub fn channel_count(&self, state: &str, n: i64) {
        self.channels.get_or_create(&StateLabel { state: state.to_owned() }).set(n);
    }

    pub fn failing_tenants(&self, part: &str, n: usize) {
        self.tenants_failing.get_or_create(&PartLabel { part: part.to_owned() }).set(n as i64);
    }

    pub fn google_call(&self, method: &str, status: &str) {
        self.google_calls.get_or_create(&CallLabels { method: method.to_owned(), status: status.to_owned() }).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
