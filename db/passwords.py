"""Password hashing (argon2id) and the password policy for staff and pupils.

Hashing runs in threads, off the event loop, on two pools. Checking a password as someone signs in (and
hashing one password at a time) runs on one thread per core; hashing many at once (an import, a reset of
many users) runs on its own smaller pool, one core short of the machine, and keeps only a few hashes queued
at a time. So sign-in never waits in line behind a large import, and concurrent bulk jobs share the bulk
threads instead of the second waiting for the whole of the first.
"""

import asyncio
import contextlib
import functools
import itertools
import os
import secrets
import uuid
from collections.abc import AsyncGenerator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from db.errors import ErrorCode, Problem

MEMORY_COST_KIB = 19456  # 19 MiB
TIME_COST = 2
PARALLELISM = 1

STAFF_MIN_LENGTH = 8
MAX_LENGTH = 128
DEFAULT_PUPIL_MIN_LENGTH = 4

HASHING_THREADS = os.cpu_count() or 1
# At least one core's worth is left to interactive hashing, whatever the bulk jobs.
BULK_HASHING_THREADS = max(1, HASHING_THREADS - 1)
# Each bulk job keeps this many hashes queued or running at once.
BULK_IN_FLIGHT = 2 * BULK_HASHING_THREADS

_hasher = PasswordHasher(
    time_cost=TIME_COST,
    memory_cost=MEMORY_COST_KIB,
    parallelism=PARALLELISM,
    type=Type.ID,
)
# argon2-cffi releases the GIL while hashing, so these threads hash in parallel.
_executor = ThreadPoolExecutor(max_workers=HASHING_THREADS, thread_name_prefix="password-hashing")
_bulk_executor = ThreadPoolExecutor(
    max_workers=BULK_HASHING_THREADS, thread_name_prefix="bulk-password-hashing"
)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@functools.lru_cache(maxsize=4096)
def needs_rehash(password_hash: str) -> bool:
    # The parameters are fixed for the process, so each hash's answer is too (every sign-in asks).
    return _hasher.check_needs_rehash(password_hash)


@functools.cache
def _dummy_hash() -> str:
    return hash_password(secrets.token_urlsafe(16))


def verify_against_dummy(password: str) -> None:
    # Verify against a dummy hash when the user is unknown, so timing does not reveal who exists.
    verify_password(_dummy_hash(), password)


async def hash_password_async(password: str) -> str:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor, hash_password, password)


async def verify_password_async(password_hash: str, password: str) -> bool:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor, verify_password, password_hash, password)


async def verify_against_dummy_async(password: str) -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(_executor, verify_against_dummy, password)


async def hash_password_in_bulk(password: str) -> str:
    """One password of many, hashed on the bulk threads; callers go through `hash_in_bulk`."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_bulk_executor, hash_password, password)


async def hash_in_bulk(passwords: Sequence[str]) -> AsyncGenerator[tuple[int, str]]:
    """Each password's position and hash, as they land, hashed on the bulk threads with at most
    BULK_IN_FLIGHT of them queued at once. Use it under `contextlib.aclosing`: what is queued is cancelled
    when the caller stops early."""

    async def one(index: int, password: str) -> tuple[int, str]:
        return index, await hash_password_in_bulk(password)

    waiting = iter(enumerate(passwords))
    pending: set[asyncio.Future[tuple[int, str]]] = set()
    try:
        while True:
            for index, password in itertools.islice(waiting, BULK_IN_FLIGHT - len(pending)):
                pending.add(asyncio.ensure_future(one(index, password)))
            if not pending:
                return
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for landed in done:
                yield landed.result()
    finally:
        for task in pending:
            task.cancel()


async def hash_passwords(passwords: Sequence[str]) -> list[str]:
    """Many passwords hashed on the bulk threads, in their order."""
    hashes: list[str] = [""] * len(passwords)
    async with contextlib.aclosing(hash_in_bulk(passwords)) as landing:
        async for index, password_hash in landing:
            hashes[index] = password_hash
    return hashes


@functools.cache
def _common_passwords() -> frozenset[str]:
    text = Path(__file__).with_name("common_passwords.txt").read_text(encoding="utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


def password_problem(password: str, *, staff: bool, pupil_min_length: int) -> str | None:
    """Say what is wrong with a new password, or return None when it is acceptable."""
    min_length = STAFF_MIN_LENGTH if staff else pupil_min_length
    if "\x00" in password:
        return "The password cannot contain a NUL character."
    if len(password) > MAX_LENGTH:
        return f"The password must be at most {MAX_LENGTH} characters long."
    if len(password) < min_length:
        return f"The password must be at least {min_length} characters long."
    if not password.strip():
        return "The password cannot be made only of spaces."
    if staff and password.casefold() in _common_passwords():
        return "The password is too common and easy to guess; choose another."
    return None


def weak_password(
    password: str, *, staff: bool, pupil_min_length: int, field: str, user_id: uuid.UUID | None = None
) -> list[Problem]:
    """The PASSWORD_TOO_WEAK problem a new password has against the policy, reported against `field`, or none."""
    problem = password_problem(password, staff=staff, pupil_min_length=pupil_min_length)
    return [Problem(ErrorCode.PASSWORD_TOO_WEAK, problem, field, user_id)] if problem else []


# Short, common, child-friendly words with one obvious spelling (no homophones).
_WORD_LIST = """
    acorn actor album alien amber anchor angle ankle apple apron arrow atlas attic autumn badge
    bagel baker balloon bamboo banana banjo barn basket beach beacon beaver bicycle bison
    blanket blossom bottle branch bread breeze brick bridge brook broom bubble bucket buckle
    bugle bunny butter button cabin cactus camel camera candle canoe canvas canyon carpet carrot
    castle cattle cello chalk cherry chess chimney cinema circle circus citrus clock cloud
    clover coast cobalt cocoa coconut comet compass cookie copper coral cotton cousin cowboy
    crayon cricket crystal cupcake curtain cycle daisy dancer desert diamond dinner doctor
    dolphin donkey dragon drawer dream drum eagle easel echo elbow elephant ember engine falcon
    farmer feather fence ferry fiddle field finger flame forest fossil fountain fox frost garden
    garlic giant ginger giraffe glacier glove goose grape grass gravel guitar hammer harvest
    hazel helmet heron hiking honey hoop horizon hotel igloo island ivory jacket jelly jigsaw
    jungle kayak kettle kitten koala ladder lagoon lantern laptop lemon lentil library lily
    lizard lobster locket lunch magnet mango maple marble meadow melon mermaid mitten monkey
    moose mountain muffin museum music napkin nectar needle nest noodle oasis ocean octopus
    olive onion orange orbit orchard otter owl paddle panda pancake panther paper parade parrot
    pasta peanut pebble pelican pencil penguin pepper piano picnic pillow pilot pirate planet
    pocket poem pony popcorn potato pretzel pudding puffin puppet puzzle pyramid quilt rabbit
    radio rainbow raisin rattle raven ribbon river robot rocket rooster saddle salmon sandal
    satchel saucer scarf school scooter season shadow shell shovel signal silver skate sketch
    sled slipper snail snowman soccer spider spinach sponge spoon spring squash stable star
    statue sticker stone summer sunset swan sweater tablet tiger timber toast tomato topaz
    tortoise tower tractor travel treasure tulip tunnel turkey turtle umbrella valley velvet
    violin volcano wagon walnut walrus water whistle window winter wizard wombat zebra zipper
"""
_WORDS = tuple(_WORD_LIST.split())


def memorable_password(words: int = 3) -> str:
    """Make a password that is easy to read out and type, such as "river-apple-cloud-42"."""
    if words < 2:
        raise ValueError("A memorable password needs at least two words.")
    chosen = [secrets.choice(_WORDS) for _ in range(words)]
    return "-".join([*chosen, f"{secrets.randbelow(100):02d}"])
