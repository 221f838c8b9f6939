/* Shared by the Causeway L4 balancer's XDP programs (docs/l4lb.md).
 *
 * Every map layout here is mirrored byte for byte by l4-lb/src/xdp.rs, which writes the maps as
 * plain byte arrays: change both together. Addresses and ports are kept in network byte order,
 * exactly as they sit in the packet; indexes, sizes and counters are host order.
 */
#ifndef CAUSEWAY_L4LB_COMMON_H
#define CAUSEWAY_L4LB_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define IPPROTO_IPIP_OUTER 4
/* Fragment offset and More Fragments bits of frag_off. */
#define IP_OFFSET_MASK 0x1fff
#define IP_MF 0x2000
#define IP_DF 0x4000

#endif
