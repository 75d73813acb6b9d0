"""The search's estimates and pruning rules on made-up figures: for each rule a case where it
prunes, one where it keeps, and its edges."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from wrapcodec.encode import keeps_update, rules

# --- estimates -------------------------------------------------------------------------------


def test_estimated_cost_scales_the_probe_and_adds_the_overhead() -> None:
    # probe: MSE 4, 1000 bits a frame; full/probe ratios 1.5 (D) and 2 (R); 10 frames of 100
    cost, bits = rules.estimated_cost(4.0, 1000.0, 1.5, 2.0, 80, 10, 100, 0.5)
    assert bits == 2 * 1000 * 10 + 80
    assert cost == pytest.approx(1.5 * 4 + 0.5 * bits / (10 * 100))


def test_probe_scales_compare_bytes_per_frame_and_mse() -> None:
    rate, distortion = rules.probe_scales(9000, 30, 6.0, 1000, 8, 4.0)
    assert rate == pytest.approx((9000 / 30) / (1000 / 8))
    assert distortion == pytest.approx(1.5)
    assert rules.probe_scales(9000, 30, 6.0, 1000, 8, 0.0)[1] == 1.0  # a lossless probe


def test_shared_distortion_scales_the_anchor_by_the_sampled_ratio() -> None:
    assert rules.shared_distortion(10.0, 3.0, 4.0) == pytest.approx(7.5)  # post beats direct
    assert rules.shared_distortion(10.0, 0.0, 4.0) == 0.0
    assert rules.shared_distortion(10.0, 3.0, 0.0) == 13.0  # lossless anchor sample: added


# --- the bound --------------------------------------------------------------------------------


def test_coding_adds_to_linear_options_only() -> None:
    assert rules.coding_added("lanczos", 2.5) == 2.5
    assert rules.coding_added("bilinear", 2.5) == 2.5
    assert rules.coding_added("post", 2.5) == 0.0
    assert rules.coding_added("wrapper", 2.5) == 0.0


def test_bound_rules_out_what_reaches_the_anchor() -> None:
    assert rules.bound_rules_out(12.0, 10.0)  # prunes: its least J is above the anchor's
    assert not rules.bound_rules_out(9.99, 10.0)  # keeps: it might still beat the anchor
    assert rules.bound_rules_out(10.0, 10.0)  # edge: equal cannot beat (strictly lower wins)
    assert not rules.bound_rules_out(1e9, math.inf)  # no anchor yet: nothing ruled out


# --- the ratio ladder -------------------------------------------------------------------------


def test_ladder_stops_past_the_margin() -> None:
    assert rules.ladder_stops(11.5, 10.0, 0.10)  # prunes: milder is 15 % above the best
    assert not rules.ladder_stops(10.5, 10.0, 0.10)  # keeps: 5 % above
    assert not rules.ladder_stops(None, 10.0, 0.10)  # edge: the mildest ratio always probed
    assert not rules.ladder_stops(11.0, 10.0, 0.10)  # edge: exactly at the margin keeps
    assert rules.ladder_stops(10.0 + 1e-9, 10.0, 0.0)  # no margin: anything above the best


def test_ladder_value_is_the_higher_of_milder_and_own_bound() -> None:
    assert rules.ladder_value(12.0, None) == 12.0
    assert rules.ladder_value(12.0, 15.0) == 15.0
    assert rules.ladder_value(12.0, 11.0) == 12.0


# --- the family rule --------------------------------------------------------------------------


def test_best_by_ratio_takes_the_lowest_and_counts_the_anchor_at_full_size() -> None:
    half, third = Fraction(1, 2), Fraction(2, 3)
    best = rules.best_by_ratio(10.0, [(half, 12.0), (third, 9.0), (half, 11.0), (1, 9.5)])
    assert best == {Fraction(1): 9.5, half: 11.0, third: 9.0}
    assert rules.best_by_ratio(10.0, []) == {Fraction(1): 10.0}


def test_family_in_play_within_the_margin() -> None:
    assert not rules.family_in_play(13.0, 10.0, 0.25)  # prunes: 30 % above the best
    assert rules.family_in_play(12.0, 10.0, 0.25)  # keeps: 20 % above
    assert rules.family_in_play(12.5, 10.0, 0.25)  # edge: exactly at the margin keeps
    assert rules.family_in_play(None, 10.0, 0.25)  # edge: nothing known of the ratio yet
    assert rules.family_in_play(1e9, 10.0, None)  # edge: a level without a margin


def test_pair_in_play_only_where_post_beats_linear() -> None:
    assert not rules.pair_in_play(10.0, 9.0)  # prunes: post worse than linear
    assert rules.pair_in_play(8.0, 9.0)  # keeps: post better
    assert not rules.pair_in_play(9.0, 9.0)  # edge: a tie does not beat
    assert rules.pair_in_play(None, 9.0)  # edge: post not estimated
    assert rules.pair_in_play(10.0, None)  # edge: linear not estimated


# --- the verify margin and the update rule ----------------------------------------------------


def test_worth_coding_below_the_anchor_by_the_margin() -> None:
    assert not rules.worth_coding(9.99, 10.0, 0.002)  # prunes: 0.1 % below the anchor
    assert rules.worth_coding(9.9, 10.0, 0.002)  # keeps: 1 % below
    assert not rules.worth_coding(10.0 * (1 - 0.002), 10.0, 0.002)  # edge: exactly at it
    assert rules.worth_coding(10.5, 10.0, 0.0)  # edge: no margin, every finalist coded


def test_a_pair_is_coded_in_full_only_below_its_post_processor() -> None:
    assert rules.pair_worth_coding(9.0, 10.0)  # keeps: the pre-processor pays
    assert not rules.pair_worth_coding(10.5, 10.0)  # prunes: behind its post-processor
    assert not rules.pair_worth_coding(10.0, 10.0)  # edge: a tie does not beat
    assert rules.pair_worth_coding(10.5, None)  # edge: the post-processor not estimated


def test_keeps_update_only_when_it_lowers_j() -> None:
    assert keeps_update(10.0, 9.0)
    assert not keeps_update(9.0, 10.0)
    assert not keeps_update(9.0, 9.0)  # a tie: the smaller file, without the update
