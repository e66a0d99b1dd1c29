//! Test harness: real servers on 127.0.0.1 for tagflow tests.
