//! percore-protocols: reserved for the protocols layer of percore (see the project's DESIGN.md).
//!
//! This crate is a documented placeholder until its issue lands; it exports nothing yet.

#![forbid(unsafe_code)]
