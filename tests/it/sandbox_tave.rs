//! Contract tests of the tave adapter against its sandbox (being built).
