// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0
/* The balancer's XDP fast path (docs/l4lb.md, "XDP data path").
 *
 * For an IPv4 TCP/UDP packet to a VIP: conntrack lookup (flow → backend, kept while the backend
 * is healthy and the flow not idle), else the VIP's Maglev table indexed by the flow hash; then
 * the packet is wrapped, unchanged, in an outer IPv4 header (protocol 4) to the backend and sent
 * back out (XDP_TX) or out of the interface the FIB picks (XDP_REDIRECT). Everything else passes
 * to the kernel untouched (BGP, health checks, ARP...). Packets the program cannot send itself —
 * the outer packet would exceed the egress MTU (XDP cannot fragment) or the backend's neighbour
 * entry is not resolved yet — also pass: the kernel routes the VIP into the userspace data path,
 * which fragments and resolves neighbours (the slow path, same Maglev tables).
 *
 * A full-size packet with Don't Fragment set is answered instead (ICMP fragmentation needed,
 * announcing the egress MTU minus the outer header, sent back to the client with XDP_TX): the
 * client's path MTU discovery then sends segments whose encapsulation fits, and the rest of the
 * flow stays on the fast path. The gateway's SYN-ACK never passes here (direct server return),
 * so a balancer cannot clamp the MSS the client sends with; docs/l4lb.md, MTU.
 *
 * The flow hash and the Maglev table are the userspace ones (l4-lb/src/hash.rs, maglev.rs):
 * FNV-1a 64 over src, dst, src port, dst port, protocol (13 bytes, network order) from
 * FNV_OFFSET ^ SEED_FLOW, then murmur3's fmix64; slot = hash % table size.
 */
#include "common.h"

/* Default sizes; userspace sets every VIP map's size at load time with headroom
 * (l4-lb/src/xdp/plan.rs, Capacity) and applies VIP changes in place. */
#define MAX_VIPS 1024
#define MAX_STATS 65536

/* Drop and slow-path counters (index into `reasons`; l4-lb/src/xdp.rs names them). */
enum reason {
	R_NO_BACKEND = 0,  /* dropped: the VIP has no healthy backend */
	R_MALFORMED = 1,   /* dropped: truncated IPv4/TCP/UDP header to a VIP */
	R_SLOW_MTU = 2,    /* passed to the slow path: outer packet above the egress MTU */
	R_SLOW_NEIGH = 3,  /* passed to the slow path: backend neighbour not resolved */
	R_NO_ROUTE = 4,    /* dropped: no route to the backend */
	R_ENCAP = 5,       /* dropped: could not grow the packet head */
	R_FWD_DISABLED = 6, /* dropped: IPv4 forwarding is off on the ingress interface */
	R_FRAG_NEEDED = 7, /* dropped and answered: ICMP fragmentation needed to the client */
	R_MAX = 8,
};

struct vip_key {
	__u32 addr;  /* network order */
	__u16 port;  /* network order; 0: any port (and port-less fragments) */
	__u8 proto;
	__u8 pad;
};

struct vip_meta {
	__u32 index;   /* the VIP's id, stable while it exists: counters, `healthy` */
	__u32 offset;  /* first slot of the VIP's Maglev table (its region) in `maglev` */
	__u32 size;    /* table size (prime); 0: no backend */
	__u32 flags;   /* VIP_FRAGMENTS_ONLY: a port-0 entry of a VIP with ports */
};

/* The port-0 entry of a VIP that serves only some ports: it matches the port-less later
 * fragments, not packets to other ports. */
#define VIP_FRAGMENTS_ONLY 1

struct flow_key {
	__u32 src;
	__u32 dst;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct flow_state {
	__u32 backend;  /* network order */
	__u32 pad;
	__u64 last_ns;  /* bpf_ktime_get_ns() of the last packet */
};

struct backend_key {
	__u32 vip;      /* vip_meta.index (the VIP's id) */
	__u32 backend;  /* network order */
};

struct counters {
	__u64 packets;
	__u64 bytes;
};

/* Global settings: [0] = fallback outer source address (network order, low 32 bits),
 * [1] = conntrack idle timeout in ns. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, __u64);
} settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_VIPS * 4);
	__type(key, struct vip_key);
	__type(value, struct vip_meta);
} vips SEC(".maps");

/* Every VIP's Maglev table in a region of its own (vip_meta.offset); entries are backend
 * addresses (network order), 0 for none. A changed table is written into a fresh region and
 * the VIP's `vips` entries flipped to it, so a packet never reads a half-written table; freed
 * regions are reused only after a grace period. Sized by userspace at load time, with room to
 * spare for VIPs added in place. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2 * 65537);
	__type(key, __u32);
	__type(value, __u32);
} maglev SEC(".maps");

/* (VIP, backend) pairs currently in the VIP's table: a tracked flow keeps its backend only
 * while the pair is here. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_STATS);
	__type(key, struct backend_key);
	__type(value, __u32);
} healthy SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1 << 20);  /* conntrack.capacity, set by userspace */
	__type(key, struct flow_key);
	__type(value, struct flow_state);
} conntrack SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, MAX_STATS);
	__type(key, struct backend_key);
	__type(value, struct counters);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MAX_VIPS);
	__type(key, __u32);
	__type(value, __u64);
} new_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, R_MAX);
	__type(key, __u32);
	__type(value, __u64);
} reasons SEC(".maps");

/* BPF_FIB_LOOKUP_SRC (Linux 6.7): also fill in the source address the kernel would use. */
#define CW_FIB_LOOKUP_SRC (1U << 4)
#define AF_INET 2

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x00000100000001b3ULL
#define SEED_FLOW 0x165667b19e3779f9ULL

static __always_inline __u64 fmix64(__u64 k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdULL;
	k ^= k >> 33;
	k *= 0xc4ceb9fe1a85ec53ULL;
	k ^= k >> 33;
	return k;
}

static __always_inline __u64 flow_hash(const struct flow_key *k)
{
	const __u8 *b = (const __u8 *)k;
	__u64 h = FNV_OFFSET ^ SEED_FLOW;
#pragma unroll
	for (int i = 0; i < 13; i++) {
		h ^= b[i];
		h *= FNV_PRIME;
	}
	return fmix64(h);
}

static __always_inline void count(__u32 r)
{
	__u64 *c = bpf_map_lookup_elem(&reasons, &r);
	if (c)
		*c += 1;
}

static __always_inline __u16 csum_fold(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* The packet in `ctx` (Ethernet + IPv4 with DF, too big once encapsulated) becomes, in place,
 * an ICMP "fragmentation needed" (type 3, code 4, RFC 1191) from the VIP to the client announcing
 * `mtu`, quoting the IP header and the first 8 payload bytes, addressed back to the router it
 * came from. Byte for byte what `packet::frag_needed(packet, vip, mtu)` builds (the oracle).
 * The tail is cut to the quote first, then the head grows by the new IP and ICMP headers, so
 * nothing is moved. */
static __always_inline int frag_needed(struct xdp_md *ctx, __u16 mtu)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end)
		return XDP_DROP;
	/* ihl is 5..15 (checked by the caller): the quote is 28..68 bytes. */
	__u32 quote = ((__u32)iph->ihl & 0xf) * 4 + 8;
	if ((void *)iph + quote > data_end)
		return XDP_DROP;
	__u8 router[ETH_ALEN], self[ETH_ALEN];
	__builtin_memcpy(router, eth->h_source, ETH_ALEN);
	__builtin_memcpy(self, eth->h_dest, ETH_ALEN);
	__u32 client = iph->saddr, vip = iph->daddr;

	int keep = (int)(sizeof(struct ethhdr) + quote);
	if (bpf_xdp_adjust_tail(ctx, keep - (int)(data_end - data)))
		return XDP_DROP;
	if (bpf_xdp_adjust_head(ctx, 0 - (int)(sizeof(struct iphdr) + 8)))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__u8 *icmp = (void *)(ip + 1);
	if ((void *)(icmp + 8) > data_end)
		return XDP_DROP;
	__builtin_memcpy(eth->h_dest, router, ETH_ALEN);
	__builtin_memcpy(eth->h_source, self, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);
	ip->version = 4;
	ip->ihl = 5;
	ip->tos = 0xc0;
	ip->tot_len = bpf_htons((__u16)(sizeof(struct iphdr) + 8 + quote));
	ip->id = 0;
	ip->frag_off = 0;
	ip->ttl = 64;
	ip->protocol = IPPROTO_ICMP;
	ip->check = 0;
	ip->saddr = vip;
	ip->daddr = client;
	__u32 sum = 0;
	__u16 *w = (__u16 *)ip;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	ip->check = csum_fold(sum);

	icmp[0] = 3; /* destination unreachable */
	icmp[1] = 4; /* fragmentation needed and DF set */
	*(__u16 *)(icmp + 2) = 0;
	*(__u16 *)(icmp + 4) = 0;
	*(__u16 *)(icmp + 6) = bpf_htons(mtu);
	/* The ICMP checksum covers the header and the quote: 36..76 bytes, 16 bits at a time. */
	__u32 len = 8 + quote;
	sum = 0;
	for (int i = 0; i < 38; i++) {
		__u16 *p = (__u16 *)(icmp + i * 2);
		if ((__u32)(i * 2) >= len || (void *)(p + 1) > data_end)
			break;
		sum += *p;
	}
	*(__u16 *)(icmp + 2) = csum_fold(sum);
	count(R_FRAG_NEEDED);
	return XDP_TX;
}

SEC("xdp")
int causeway_balancer(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end || iph->version != 4 || iph->ihl < 5)
		return XDP_PASS;
	if (iph->protocol != IPPROTO_TCP && iph->protocol != IPPROTO_UDP)
		return XDP_PASS;

	struct flow_key key = {};
	key.src = iph->saddr;
	key.dst = iph->daddr;
	key.proto = iph->protocol;
	/* Later fragments carry no ports: they hash on ports 0 (as in userspace). */
	int first = (bpf_ntohs(iph->frag_off) & IP_OFFSET_MASK) == 0;

	struct vip_key vk = {.addr = iph->daddr, .port = 0, .proto = iph->protocol};
	if (first) {
		__u8 *l4 = (__u8 *)iph + iph->ihl * 4;
		if ((void *)(l4 + 4) > data_end) {
			/* Only a VIP's packets are ours to judge. */
			if (bpf_map_lookup_elem(&vips, &vk)) {
				count(R_MALFORMED);
				return XDP_DROP;
			}
			return XDP_PASS;
		}
		key.sport = *(__u16 *)l4;
		key.dport = *(__u16 *)(l4 + 2);
		vk.port = key.dport;
	}
	struct vip_meta *vip = bpf_map_lookup_elem(&vips, &vk);
	if (!vip && vk.port) {
		vk.port = 0;
		vip = bpf_map_lookup_elem(&vips, &vk);
		if (vip && (vip->flags & VIP_FRAGMENTS_ONLY))
			vip = NULL;
	}
	if (!vip)
		return XDP_PASS;
	__u32 vip_index = vip->index;
	__u32 offset = vip->offset;
	__u32 size = vip->size;
	if (size == 0) {
		count(R_NO_BACKEND);
		return XDP_DROP;
	}

	__u64 now = bpf_ktime_get_ns();
	__u32 zero = 0, one = 1;
	__u64 *idle = bpf_map_lookup_elem(&settings, &one);
	__u64 idle_ns = idle ? *idle : 300000000000ULL;
	__u32 backend = 0;
	struct flow_state *st = bpf_map_lookup_elem(&conntrack, &key);
	if (st && now - st->last_ns <= idle_ns) {
		struct backend_key bk = {.vip = vip_index, .backend = st->backend};
		if (bpf_map_lookup_elem(&healthy, &bk)) {
			backend = st->backend;
			st->last_ns = now;
		}
	}
	if (!backend) {
		__u32 slot = offset + (__u32)(flow_hash(&key) % size);
		__u32 *b = bpf_map_lookup_elem(&maglev, &slot);
		if (!b || !*b) {
			count(R_NO_BACKEND);
			return XDP_DROP;
		}
		backend = *b;
		struct flow_state ns = {.backend = backend, .last_ns = now};
		bpf_map_update_elem(&conntrack, &key, &ns, BPF_ANY);
		__u64 *nf = bpf_map_lookup_elem(&new_flows, &vip_index);
		if (nf)
			*nf += 1;
	}

	__u16 inner_len = bpf_ntohs(iph->tot_len);
	__u8 tos = iph->tos;
	int dont_fragment = (bpf_ntohs(iph->frag_off) & IP_DF) != 0;

	/* Where the outer packet goes: the FIB gives the egress interface, both MACs, the source
	 * address and checks the MTU against the outer length. */
	struct bpf_fib_lookup fib = {};
	fib.family = AF_INET;
	fib.tos = tos;
	fib.l4_protocol = IPPROTO_IPIP_OUTER;
	fib.tot_len = inner_len + sizeof(struct iphdr);
	fib.ipv4_dst = backend;
	fib.ifindex = ctx->ingress_ifindex;
	long rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), CW_FIB_LOOKUP_SRC);
	if (rc < 0) {
		/* A kernel before 6.7 refuses the flag: use the configured source address. */
		__u64 *src = bpf_map_lookup_elem(&settings, &zero);
		fib.ipv4_src = src ? (__u32)*src : 0;
		fib.tot_len = inner_len + sizeof(struct iphdr);
		fib.ipv4_dst = backend;
		fib.ifindex = ctx->ingress_ifindex;
		rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	}
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		/* Too big once encapsulated. With DF the client learns the MTU that fits (path MTU
		 * discovery) and the flow stays here; without it the kernel fragments it on the slow
		 * path. A route MTU too small to announce (under 68 + 20) also takes the slow path. */
		__u16 mtu = fib.mtu_result;
		if (dont_fragment && mtu >= 68 + sizeof(struct iphdr))
			return frag_needed(ctx, mtu - sizeof(struct iphdr));
		count(R_SLOW_MTU);
		return XDP_PASS;
	}
	if (rc == BPF_FIB_LKUP_RET_NO_NEIGH) {
		count(R_SLOW_NEIGH);
		return XDP_PASS;
	}
	if (rc == BPF_FIB_LKUP_RET_FWD_DISABLED) {
		count(R_FWD_DISABLED);
		return XDP_DROP;
	}
	if (rc != BPF_FIB_LKUP_RET_SUCCESS) {
		count(R_NO_ROUTE);
		return XDP_DROP;
	}

	if (bpf_xdp_adjust_head(ctx, 0 - (int)sizeof(struct iphdr))) {
		count(R_ENCAP);
		return XDP_DROP;
	}
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	struct iphdr *outer = (void *)(eth + 1);
	if ((void *)(outer + 1) > data_end) {
		count(R_ENCAP);
		return XDP_DROP;
	}
	__builtin_memcpy(eth->h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, fib.smac, ETH_ALEN);
	eth->h_proto = bpf_htons(ETH_P_IP);
	outer->version = 4;
	outer->ihl = 5;
	outer->tos = tos;
	outer->tot_len = bpf_htons(inner_len + sizeof(struct iphdr));
	outer->id = 0;
	outer->frag_off = bpf_htons(IP_DF);
	outer->ttl = 64;
	outer->protocol = IPPROTO_IPIP_OUTER;
	outer->check = 0;
	outer->saddr = fib.ipv4_src;
	outer->daddr = backend;
	__u32 sum = 0;
	__u16 *w = (__u16 *)outer;
#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	outer->check = csum_fold(sum);

	struct backend_key sk = {.vip = vip_index, .backend = backend};
	struct counters *c = bpf_map_lookup_elem(&stats, &sk);
	if (c) {
		c->packets += 1;
		c->bytes += inner_len;
	} else {
		struct counters init = {.packets = 1, .bytes = inner_len};
		bpf_map_update_elem(&stats, &sk, &init, BPF_NOEXIST);
	}

	if (fib.ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(fib.ifindex, 0);
}

/* Does nothing: attached to the peer of a veth that uses native XDP_TX / XDP_REDIRECT, whose
 * frames a veth only accepts while the receiving side runs an XDP program (tests and bench). */
SEC("xdp")
int causeway_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
