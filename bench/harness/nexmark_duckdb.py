#!/usr/bin/env python3
"""Cross-checks Millrace's Nexmark q5 and q7 against DuckDB over the same generated bids.

    python3 bench/harness/nexmark_duckdb.py BIDS.json Q5.json Q7.json

BIDS.json holds the bids of the sequence (JSON lines, e.g. `INSERT INTO f SELECT * FROM bid`
with the Nexmark source into a `file` sink), Q5.json and Q7.json the outputs of
examples/nexmark/q5.sql and q7.sql run with the same source options. DuckDB (`pip install
duckdb`) evaluates nexmark-flink's q5 and q7 with the windows written out from their
definitions (HOP 2 s / 10 s; TUMBLE 10 s, window_end as B1.dateTime), independently of the
engine; the script prints both multisets' sizes and exits 1 if they differ.
"""
import collections
import sys

import duckdb

BIDS = """CREATE TABLE b AS SELECT auction, bidder, price,
  epoch_ms(CAST(datetime AS TIMESTAMP)) AS t, CAST(datetime AS TIMESTAMP) AS dt
  FROM read_json_auto(?, format = 'newline_delimited')"""

Q5 = """
WITH w AS (
  SELECT auction, (t - t % 2000) - k * 2000 AS ws FROM b, range(0, 5) r(k)
  WHERE (t - t % 2000) - k * 2000 > t - 10000),
AuctionBids AS (SELECT auction, count(*) AS num, ws AS starttime, ws + 10000 AS endtime
                FROM w GROUP BY auction, ws),
MaxBids AS (SELECT max(num) AS maxn, starttime, endtime FROM AuctionBids GROUP BY starttime, endtime)
SELECT AuctionBids.auction, AuctionBids.num FROM AuctionBids JOIN MaxBids
  ON AuctionBids.starttime = MaxBids.starttime AND AuctionBids.endtime = MaxBids.endtime
 AND AuctionBids.num >= MaxBids.maxn"""

Q7 = """
WITH B1 AS (SELECT max(price) AS maxprice, (t - t % 10000) + 10000 AS dateTime FROM b GROUP BY t - t % 10000)
SELECT B.auction, B.price, B.bidder, B.t FROM b B JOIN B1 ON B.price = B1.maxprice
WHERE B.t BETWEEN B1.dateTime - 10000 AND B1.dateTime"""


def millrace(con, path, columns):
    select = ", ".join(columns)
    return collections.Counter(con.execute(
        f"SELECT {select} FROM read_json_auto(?, format = 'newline_delimited')", [path]).fetchall())


def main():
    bids, q5, q7 = sys.argv[1:4]
    con = duckdb.connect()
    con.execute(BIDS, [bids])
    ok = True
    want5 = collections.Counter(con.execute(Q5).fetchall())
    got5 = millrace(con, q5, ["auction", "num"])
    print(f"q5: DuckDB {sum(want5.values())} rows, Millrace {sum(got5.values())} rows, equal: {want5 == got5}")
    ok &= want5 == got5
    want7 = collections.Counter(con.execute(Q7).fetchall())
    got7 = millrace(con, q7, ["auction", "price", "bidder", "epoch_ms(CAST(datetime AS TIMESTAMP))"])
    print(f"q7: DuckDB {sum(want7.values())} rows, Millrace {sum(got7.values())} rows, equal: {want7 == got7}")
    ok &= want7 == got7
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
