//! `percore load` and `percore bench` as users run them: real servers (percore's own services
//! as child processes, nginx), real sockets, the real binary; HdrHistogram's Java log
//! processor reads the interval logs.

mod helpers;
#[path = "../common/nginx.rs"]
mod nginx;

mod accounting;
mod bad_targets;
mod coordinated_omission;
mod hlog_java;
mod hlog_merge;
mod http;
mod udp;
