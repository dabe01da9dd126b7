//! gwsync keeps a business phone system in step with Google Workspace: calendar events with
//! trigger words switch users' phone profiles, and the company's contacts become the phonebook.
//!
//! Module map (grows with the service; see ../DESIGN.md §3 in the shared notes):
//! - `demo` — `gwsync demo`: the bundled fake Google with sample data.

pub mod demo;
