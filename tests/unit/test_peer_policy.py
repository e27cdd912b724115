"""The pure parts of peer access: selectors, and who a reviewed token says the caller is."""

from __future__ import annotations

import pytest

from modelexpress.p2p.access import PeerPolicy
from modelexpress.tokenreview import POD_NAME, POD_UID, ReviewedUser, bearer_token


def test_selectors_are_equality_terms() -> None:
    assert PeerPolicy.parse_selector("team=a, tier=serving") == {"team": "a", "tier": "serving"}
    assert PeerPolicy.parse_selector("  ") is None
    with pytest.raises(ValueError, match="MX_PEER_SELECTOR term 'team': expected key=value"):
        PeerPolicy.parse_selector("team")


def test_a_pod_bound_service_account_token_names_its_account_and_pod() -> None:
    user = ReviewedUser("system:serviceaccount:inference:mx-worker", {POD_NAME: ["vllm-0"], POD_UID: ["u-1"]})
    assert user.service_account == ("inference", "mx-worker") and user.pod == ("vllm-0", "u-1")
    assert ReviewedUser("alice").service_account is None and ReviewedUser("alice").pod is None


def test_bearer_tokens_are_read_from_call_metadata() -> None:
    assert bearer_token((("authorization", "Bearer abc"),)) == "abc"
    assert bearer_token((("authorization", "Basic abc"),)) is None and bearer_token(None) is None
