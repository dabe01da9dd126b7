//! Presence: trigger words in calendar events switch users' phone profiles, and the switches
//! are delivered to the phone system at each event's start and end.
//!
//! `matcher` (trigger words) → `recurrence` (series over the horizon) → `timeline` (which
//! profile when) → `engine` (recompute, schedule, reconcile) → `outbox` (signed delivery, with
//! `signing`).

pub mod deliveries;
pub mod engine;
pub mod matcher;
pub mod outbox;
pub mod recurrence;
pub mod signing;
pub mod timeline;
