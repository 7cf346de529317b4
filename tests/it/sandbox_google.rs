//! Contract tests of the google adapter against its sandbox (being built).
