//! Keys and values: request limits, what a member refuses to store, compaction, alarms and auth tokens.
//! One scenario per file; every test starts the real daemon binaries.

mod alarms;
mod auth_tokens;
mod auto_compaction;
mod range_stream;
mod request_limits;
mod unstorable_requests;
