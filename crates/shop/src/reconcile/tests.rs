//! The checker on facts written by hand: each rule, and how a finding is classed.
