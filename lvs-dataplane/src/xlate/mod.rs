//! The forwarding transforms: NAT, FULLNAT, DR and TUN, their reply paths and ICMP errors.

pub mod lip;
