//! Contract tests of the lightblue adapter against its sandbox (being built).
