"""rowstream/records.py: record boundaries in NDJSON and CSV bytes (counters, resuming)."""

from rowstream import records


def test_csv_records_ignore_newlines_inside_quoted_fields_across_chunks() -> None:
    data = b'id,body\n1,"two\nlines"\n2,"say ""hi""\n"\n3,plain\n'
    assert records.csv_records(data, False) == (4, False)
    total, state = 0, False
    for i in range(len(data)):  # split at every possible place
        total, state = 0, False
        for part in (data[:i], data[i:]):
            n, state = records.csv_records(part, state)
            total += n
        assert total == 4 and state is False


def test_last_records_finds_the_last_complete_record() -> None:
    data = b'id,body\n1,"a\nb"\n2,"c"\n3,"unfinished\n'
    start, end, count = records.last_records(data, csv=True)
    assert data[start:end] == b'2,"c"\n' and count == 3
    nd = b'{"id":1}\n{"id":2}\n{"id":'
    start, end, count = records.last_records(nd, csv=False)
    assert nd[start:end] == b'{"id":2}\n' and count == 2
    assert records.last_records(b"no newline", csv=False) == (0, 0, 0)
    assert records.last_records(b'"open\n', csv=True) == (0, 0, 0)


def test_last_records_read_in_blocks_equal_those_of_the_whole() -> None:
    for csv, data in (
        (True, b'id,body\n1,"a\nb"\n2,"say ""hi""\n"\n3,"unfinished\n'),
        (False, b'{"id":1}\n{"id":2}\n{"id":3}\n{"id":'),
    ):
        whole = records.last_records(data, csv=csv)
        for size in range(1, len(data) + 1):
            blocks = [data[i : i + size] for i in range(0, len(data), size)]
            assert records.last_records_in(blocks, csv=csv) == whole, (csv, size)


def test_the_first_csv_record_ends_at_a_newline_outside_quotes() -> None:
    from rowstream.records import first_record_end

    header = b'id,"the\nname","say ""hi"""\n'
    assert first_record_end(header + b"1,a,b\n") == len(header)
    assert first_record_end(b'id,"open\n') == -1
