//! The Causeway L4 balancer: owns the VIPs, picks a gateway per flow with Maglev, encapsulates in
//! IPIP for direct server return, and announces VIPs over BGP.
