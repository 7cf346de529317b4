//! Contract tests of the zapier adapter against its sandbox (being built).
