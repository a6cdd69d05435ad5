//! Test backend (being written).
