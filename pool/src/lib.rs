//! percore-pool: reserved for the pool layer of percore (see the project's DESIGN.md).
//!
//! This crate is a documented placeholder until its issue lands; it exports nothing yet.

#![forbid(unsafe_code)]
