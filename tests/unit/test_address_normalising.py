"""The store's one spelling of an address (``normalise_address``): case,
surrounding white space and Unicode compatibility forms (NFKC) all fold to
it, for accounts, lookups and aliases alike."""

import pytest

from roost.storage.accounts import normalise_address
from roost.storage.errors import InvalidName
from roost.storage.store import Store


def test_case_white_space_and_unicode_forms_fold_to_one_address():
    assert normalise_address(" A@EXAMPLE.TEST ") == "a@example.test"
    assert normalise_address("\uff21@\uff25xample.test") == "a@example.test"     # full width
    composed, decomposed = "jos\u00e9@example.test", "jose\u0301@example.test"
    assert normalise_address(decomposed) == normalise_address(composed) == composed
    assert normalise_address("\u2168@example.test") == "ix@example.test"        # Roman numeral nine


def test_a_form_that_folds_to_a_slash_is_refused():
    with pytest.raises(InvalidName):
        normalise_address("a\uff0fb@example.test")        # full-width solidus becomes "/"


def test_accounts_and_aliases_use_the_normalised_spelling():
    store = Store.memory()
    try:
        store.add_account("jose\u0301@example.test")
        assert store.account("JOS\u00c9@EXAMPLE.TEST").address == "jos\u00e9@example.test"
        store.add_alias("\uff30ostmaster@example.test", "jos\u00e9@example.test")
        store.add_alias("@\uff25xample.test", "jos\u00e9@example.test")
        assert ("postmaster@example.test", "jos\u00e9@example.test") in store.aliases()
        assert ("@example.test", "jos\u00e9@example.test") in store.aliases()
        assert [a.address for a, _ in store.resolve("POSTMASTER@example.test")] == \
            ["jos\u00e9@example.test"]
        store.delete_alias(" Postmaster@EXAMPLE.test ")
        assert ("postmaster@example.test", "jos\u00e9@example.test") not in store.aliases()
    finally:
        store.close()
