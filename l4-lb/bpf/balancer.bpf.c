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
 * The flow hash and the Maglev table are the userspace ones (l4-lb/src/hash.rs, maglev.rs):
 * FNV-1a 64 over src, dst, src port, dst port, protocol (13 bytes, network order) from
 * FNV_OFFSET ^ SEED_FLOW, then murmur3's fmix64; slot = hash % table size.
 */
#include "common.h"

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
	R_MAX = 7,
};

struct vip_key {
	__u32 addr;  /* network order */
	__u16 port;  /* network order; 0: any port (and port-less fragments) */
	__u8 proto;
	__u8 pad;
};

struct vip_meta {
	__u32 index;   /* position in the configuration: counters */
	__u32 offset;  /* first slot of the active Maglev table in `maglev` */
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
	__u32 vip;      /* vip_meta.index */
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

/* Every VIP's two Maglev tables (active and the one being written) back to back; entries are
 * backend addresses (network order), 0 for none. Sized by userspace at load time. */
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
