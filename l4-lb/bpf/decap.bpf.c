// SPDX-License-Identifier: Apache-2.0 OR GPL-2.0
/* The gateway host's XDP (and tc) decap (docs/l4lb.md, "XDP data path").
 *
 * An IPIP packet (outer protocol 4, not a fragment) whose inner destination is one of this
 * host's VIPs loses its outer header here — the Ethernet header moves forward by 20 bytes and
 * the head shrinks — and the inner packet, unchanged, goes up the stack (XDP_PASS) to the VIP
 * bound on `lo`. Everything else passes untouched; fragmented IPIP (which XDP cannot reassemble)
 * reaches the userspace decap agent through the kernel, which reassembles it first.
 */
#include "common.h"
#include <linux/pkt_cls.h>

/* Inner destinations accepted (network order). With `any[0]` = 1 every inner destination is. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u32);
} decap_vips SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} decap_any SEC(".maps");

/* [0] packets, [1] inner bytes delivered; [2] fragments left to the slow path;
 * [3] inner destination not a VIP (passed untouched). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} decap_counters SEC(".maps");

static __always_inline void add(__u32 i, __u64 v)
{
	__u64 *c = bpf_map_lookup_elem(&decap_counters, &i);
	if (c)
		*c += v;
}

SEC("xdp")
int causeway_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	struct iphdr *outer = (void *)(eth + 1);
	if ((void *)(outer + 1) > data_end || outer->protocol != IPPROTO_IPIP_OUTER)
		return XDP_PASS;
	/* Our encapsulation only writes 20-byte outer headers. */
	if (outer->ihl != 5)
		return XDP_PASS;
	if (bpf_ntohs(outer->frag_off) & (IP_MF | IP_OFFSET_MASK)) {
		add(2, 1);
		return XDP_PASS;
	}
	struct iphdr *inner = outer + 1;
	if ((void *)(inner + 1) > data_end || inner->version != 4)
		return XDP_PASS;
	__u32 zero = 0;
	__u32 *any = bpf_map_lookup_elem(&decap_any, &zero);
	if (!(any && *any) && !bpf_map_lookup_elem(&decap_vips, &inner->daddr)) {
		add(3, 1);
		return XDP_PASS;
	}
	__u64 inner_len = bpf_ntohs(inner->tot_len);

	struct ethhdr copy;
	__builtin_memcpy(&copy, eth, sizeof(copy));
	if (bpf_xdp_adjust_head(ctx, (int)sizeof(struct iphdr)))
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return XDP_DROP;
	__builtin_memcpy(eth, &copy, sizeof(copy));
	add(0, 1);
	add(1, inner_len);
	return XDP_PASS;
}

/* The same decap as a tc classifier on the interface's ingress (`l4lb decap --datapath tc`),
 * attached with tcx after GRO and before the stack. It strips the outer header from the socket
 * buffer the kernel already built (bpf_skb_adjust_room, only the Ethernet header moves), where
 * the XDP program on a veth first costs a copy of every packet into a page with XDP headroom.
 * Aggregated (GRO) IPIP buffers are decapsulated whole, their segment size unchanged. Packets it
 * does not take continue untouched (TC_ACT_UNSPEC: the next program, then the stack). */
SEC("classifier")
int causeway_decap_tc(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	const __u32 need = sizeof(struct ethhdr) + 2 * sizeof(struct iphdr);
	if (data + need > data_end) {
		/* Headers not in the linear part (rare): pull them in, or leave the packet alone. */
		if (skb->len < need || bpf_skb_pull_data(skb, need))
			return TC_ACT_UNSPEC;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_UNSPEC;
	struct iphdr *outer = (void *)(eth + 1);
	if ((void *)(outer + 1) > data_end || outer->protocol != IPPROTO_IPIP_OUTER ||
	    outer->ihl != 5)
		return TC_ACT_UNSPEC;
	if (bpf_ntohs(outer->frag_off) & (IP_MF | IP_OFFSET_MASK)) {
		add(2, 1);
		return TC_ACT_UNSPEC;
	}
	struct iphdr *inner = outer + 1;
	if ((void *)(inner + 1) > data_end || inner->version != 4)
		return TC_ACT_UNSPEC;
	__u32 zero = 0;
	__u32 *any = bpf_map_lookup_elem(&decap_any, &zero);
	if (!(any && *any) && !bpf_map_lookup_elem(&decap_vips, &inner->daddr)) {
		add(3, 1);
		return TC_ACT_UNSPEC;
	}
	__u64 inner_len = skb->len - sizeof(struct ethhdr) - sizeof(struct iphdr);
	/* Remove the 20 bytes after the MAC header; FIXED_GSO keeps an aggregated buffer's segment
	 * size (the inner segments did not change). */
	if (bpf_skb_adjust_room(skb, -(__s32)sizeof(struct iphdr), BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO))
		return TC_ACT_UNSPEC;
	add(0, 1);
	add(1, inner_len);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
