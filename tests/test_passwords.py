import asyncio
import os
import threading

import pytest
from argon2 import PasswordHasher, Type

from db import passwords
from db.passwords import (
    DEFAULT_PUPIL_MIN_LENGTH,
    MAX_LENGTH,
    STAFF_MIN_LENGTH,
    hash_password,
    hash_password_async,
    hash_passwords,
    memorable_password,
    needs_rehash,
    password_problem,
    verify_against_dummy,
    verify_against_dummy_async,
    verify_password,
    verify_password_async,
)


def test_hash_and_verify_round_trip() -> None:
    password_hash = hash_password("correct horse")

    assert verify_password(password_hash, "correct horse")
    assert not verify_password(password_hash, "wrong horse")


def test_hash_is_argon2id_with_project_parameters() -> None:
    password_hash = hash_password("correct horse")

    assert password_hash.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert not needs_rehash(password_hash)


@pytest.mark.parametrize("corrupt", ["", "not a hash", "$argon2id$v=19$m=19456,t=2,p=1$garbage"])
def test_corrupt_hash_does_not_verify(corrupt: str) -> None:
    assert not verify_password(corrupt, "correct horse")


def test_hash_made_with_older_parameters_needs_rehash() -> None:
    old_hasher = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1, type=Type.ID)
    old_hash = old_hasher.hash("correct horse")

    assert verify_password(old_hash, "correct horse")
    assert needs_rehash(old_hash)


def test_dummy_hash_costs_as_much_as_a_real_one() -> None:
    verify_against_dummy("anything at all")

    assert not needs_rehash(passwords._dummy_hash())


def test_long_passwords_are_not_truncated() -> None:
    first = "a" * 99 + "b" + "a" * 28
    second = "a" * 99 + "c" + "a" * 28
    assert len(first) == MAX_LENGTH

    assert not verify_password(hash_password(first), second)


async def test_async_hash_and_verify() -> None:
    password_hash = await hash_password_async("correct horse")

    assert await verify_password_async(password_hash, "correct horse")
    assert not await verify_password_async(password_hash, "wrong horse")
    await verify_against_dummy_async("correct horse")


async def test_hash_passwords_hashes_each_password() -> None:
    plain = [f"password number {i}" for i in range(8)]

    hashes = await hash_passwords(plain)

    assert len(set(hashes)) == 8
    assert all(verify_password(h, p) for h, p in zip(hashes, plain, strict=True))


async def test_a_batch_is_hashed_on_every_bulk_thread_at_once_and_no_more(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a hash function that returns only once one call per bulk thread is running, counting how many run
    # at once and how many are queued
    threads = passwords.BULK_HASHING_THREADS
    every_thread_busy = threading.Barrier(threads, timeout=10)
    lock = threading.Lock()
    running, most_at_once, queued, most_queued = 0, 0, 0, 0
    real_hash_password = passwords.hash_password
    real_in_bulk = passwords.hash_password_in_bulk

    def hash_counting(password: str) -> str:
        nonlocal running, most_at_once
        with lock:
            running += 1
            most_at_once = max(most_at_once, running)
        try:
            every_thread_busy.wait()
            return real_hash_password(password)
        finally:
            with lock:
                running -= 1

    async def in_bulk_counting(password: str) -> str:
        nonlocal queued, most_queued
        queued += 1
        most_queued = max(most_queued, queued)
        try:
            return await real_in_bulk(password)
        finally:
            queued -= 1

    monkeypatch.setattr(passwords, "hash_password", hash_counting)
    monkeypatch.setattr(passwords, "hash_password_in_bulk", in_bulk_counting)

    # when a batch five times the size of the bulk pool is hashed
    plain = [f"password number {i}" for i in range(5 * threads)]
    hashes = await hash_passwords(plain)

    # then every bulk thread worked at once (else the barrier breaks), never more, a few queued at a time,
    # and each hash is its own password's, in order
    assert most_at_once == threads
    assert most_queued == passwords.BULK_IN_FLIGHT
    assert all(verify_password(h, p) for h, p in zip(hashes, plain, strict=True))


def test_bulk_hashing_leaves_a_core_for_signing_in() -> None:
    cores = os.cpu_count() or 1
    assert passwords.BULK_HASHING_THREADS == max(1, cores - 1)
    assert passwords.HASHING_THREADS == cores


async def test_a_password_is_checked_while_a_batch_holds_every_bulk_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given a batch whose hashes only finish once a password has been checked meanwhile
    checked = threading.Event()
    real_hash_password = passwords.hash_password

    def hash_after_a_check(password: str) -> str:
        assert checked.wait(timeout=10), "the check waited behind the batch"
        return real_hash_password(password)

    password_hash = hash_password("correct horse")
    monkeypatch.setattr(passwords, "hash_password", hash_after_a_check)
    batch = asyncio.ensure_future(hash_passwords(["pupil password"] * (4 * passwords.BULK_IN_FLIGHT)))
    await asyncio.sleep(0.05)

    # when someone signs in, then the check does not queue behind the batch
    assert await verify_password_async(password_hash, "correct horse")
    checked.set()
    assert len(await batch) == 4 * passwords.BULK_IN_FLIGHT


@pytest.mark.parametrize(
    ("password", "staff", "problem"),
    [
        ("short1!", True, "at least 8 characters"),
        ("PassWord1", True, "too common"),
        ("LetMeIn123", True, "too common"),
        ("Teacher2024", True, "too common"),
        ("purple giraffe umbrella", True, None),
        ("cat", False, "at least 4 characters"),
        ("cat1", False, None),
        ("password", False, None),
        ("x" * (MAX_LENGTH + 1), True, "at most 128 characters"),
        ("x" * (MAX_LENGTH + 1), False, "at most 128 characters"),
        ("x" * MAX_LENGTH, True, None),
        ("        ", True, "only of spaces"),
        (" \t \n ", False, "only of spaces"),
        ("", False, "at least 4 characters"),
        ("good\x00password", True, "NUL"),
    ],
)
def test_password_problem(password: str, staff: bool, problem: str | None) -> None:
    found = password_problem(password, staff=staff, pupil_min_length=DEFAULT_PUPIL_MIN_LENGTH)

    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


def test_pupil_minimum_comes_from_the_school_setting() -> None:
    assert password_problem("abcdef", staff=False, pupil_min_length=6) is None
    assert password_problem("abcde", staff=False, pupil_min_length=6) == (
        "The password must be at least 6 characters long."
    )


def test_staff_minimum_ignores_the_pupil_setting() -> None:
    assert password_problem("abc", staff=False, pupil_min_length=1) is None
    assert password_problem("zq7-vk2", staff=True, pupil_min_length=1) is not None


def test_memorable_passwords_pass_the_staff_policy_and_differ() -> None:
    generated = [memorable_password() for _ in range(20)]

    assert len(set(generated)) == 20
    for password in generated:
        assert password_problem(password, staff=True, pupil_min_length=DEFAULT_PUPIL_MIN_LENGTH) is None
        *words, digits = password.split("-")
        assert len(words) == 3 and all(word.isalpha() for word in words)
        assert len(digits) == 2 and digits.isdigit()


def test_shortest_memorable_password_is_long_enough_for_staff() -> None:
    shortest = min(passwords._WORDS, key=len)

    assert len(f"{shortest}-{shortest}-00") >= STAFF_MIN_LENGTH
    with pytest.raises(ValueError):
        memorable_password(words=1)
