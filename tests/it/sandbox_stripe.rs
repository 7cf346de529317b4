//! Contract tests of the stripe adapter against its sandbox (being built).
