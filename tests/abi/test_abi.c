/* test_abi.c - pins the segment and span record layout (record.h) at run time, under every build. */
#include <criterion/criterion.h>
#include <stddef.h>

#include "ldtrace/record.h"

Test(abi, segment_header_is_one_page)
{
    cr_assert_eq(sizeof(struct ldt_seg_hdr), 4096);
    cr_assert_eq(offsetof(struct ldt_seg_hdr, resource), 1424);
}

Test(abi, slot_and_records_fill_a_slot_exactly)
{
    cr_assert_eq(sizeof(struct ldt_slot), LDT_SLOT_SIZE);
    cr_assert_eq(sizeof(struct ldt_span_rec), LDT_SLOT_SIZE - 8);
    cr_assert_eq(sizeof(struct ldt_stack_rec), LDT_SLOT_SIZE - 8);
}

Test(abi, ring_cursors_do_not_share_a_cache_line)
{
    cr_assert_eq(sizeof(struct ldt_ring_hdr), 128);
    cr_assert_geq(offsetof(struct ldt_ring_hdr, tail) - offsetof(struct ldt_ring_hdr, head), 64);
}

Test(abi, span_fields_at_fixed_offsets)
{
    cr_assert_eq(offsetof(struct ldt_span_rec, trace_id), 8);
    cr_assert_eq(offsetof(struct ldt_span_rec, start_ns), 40);
    cr_assert_eq(offsetof(struct ldt_span_rec, status_code), 88);
    cr_assert_eq(offsetof(struct ldt_span_rec, path), 130);
    cr_assert_eq(offsetof(struct ldt_span_rec, host) + LDT_SPAN_HOST_MAX, LDT_REC_SIZE);
}
