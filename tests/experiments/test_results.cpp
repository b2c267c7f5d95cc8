// Result tables from hand-written run folders: columns, statuses, the last eval of an unfinished run,
// filters, CSV quoting, SQLite types.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "ssmlab/core/io.h"
#include "ssmlab/experiments/results.h"
#include "test_util.h"

namespace experiments_test_results {

namespace {

namespace fs = std::filesystem;
using ssmlab::experiments::cell_text;
using ssmlab::experiments::collect_results;
using ssmlab::experiments::ResultsOptions;
using ssmlab::experiments::ResultsTable;

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

// Three runs: a finished one, an unfinished one (two eval records), one that never started.
void make_runs(const fs::path& dir) {
  write(dir / "a/config.toml", "[run]\nname = \"a\"\nseed = 0\n[model]\nmixer = \"mamba1\"\nd_model = 32\n[train]\nlr = 0.001\n");
  write(dir / "a/results.json", R"({"steps": 100, "test_acc": 0.75, "test_loss": 0.5, "test_acc/L32_K4": 0.75})");
  write(dir / "a/DONE", "");
  write(dir / "b/config.toml", "[run]\nname = \"b, quoted\"\nseed = 0\n[model]\nmixer = \"attention\"\nd_model = 32\n[train]\nlr = 0.003\n");
  write(dir / "b/metrics.jsonl",
        "{\"kind\":\"train\",\"step\":10,\"train_loss\":2.0}\n{\"kind\":\"eval\",\"step\":10,\"test_acc\":0.25,\"test_loss\":2.5}\n"
        "{\"kind\":\"eval\",\"step\":20,\"test_acc\":0.5,\"test_loss\":1.5}\n{\"kind\":\"train\",\"step\":25,\"train_loss\":1.0}\n");
  write(dir / "nested/c/config.toml", "[run]\nname = \"c\"\nseed = 0\n[model]\nmixer = \"mamba1\"\nd_model = 32\n[train]\nlr = 0.01\n");
  write(dir / "a/checkpoints/step_00000100/config.toml", "not a run folder: never read\n");
}

size_t col(const ResultsTable& t, const std::string& name) {
  for (size_t i = 0; i < t.columns.size(); ++i)
    if (t.columns[i] == name) return i;
  ADD_FAILURE() << "no column " << name;
  return 0;
}

TEST(Results, ColumnsAreDifferingKeysThenMetrics) {
  ssmlab::test::TempDir tmp;
  make_runs(tmp.path);
  const ResultsTable t = collect_results(tmp.path);
  EXPECT_EQ(t.columns, (std::vector<std::string>{"run", "status", "run.name", "model.mixer", "train.lr", "steps",
                                                 "test_acc", "test_loss", "test_acc/L32_K4"}));
  EXPECT_EQ(t.config_columns, 3u);
  ASSERT_EQ(t.rows.size(), 3u);
  EXPECT_EQ(cell_text(t.rows[0][0]), "a");
  EXPECT_EQ(cell_text(t.rows[0][1]), "done");
  EXPECT_EQ(cell_text(t.rows[1][1]), "unfinished");
  EXPECT_EQ(cell_text(t.rows[1][col(t, "steps")]), "20");  // the newest eval record
  EXPECT_EQ(cell_text(t.rows[1][col(t, "test_acc")]), "0.5");
  EXPECT_EQ(cell_text(t.rows[2][0]), (fs::path("nested") / "c").string());
  EXPECT_EQ(cell_text(t.rows[2][1]), "new");
  EXPECT_EQ(cell_text(t.rows[2][col(t, "test_acc")]), "");
  ResultsOptions all;
  all.all_keys = true;
  EXPECT_EQ(collect_results(tmp.path, all).config_columns, 5u);  // run.seed and model.d_model too
}

TEST(Results, FiltersCompareNumbersAsNumbers) {
  ssmlab::test::TempDir tmp;
  make_runs(tmp.path);
  auto runs = [&](std::vector<std::string> filters) {
    ResultsOptions o;
    o.filters = std::move(filters);
    std::string names;
    for (const auto& row : collect_results(tmp.path, o).rows) names += cell_text(row[0]) + " ";
    return names;
  };
  EXPECT_EQ(runs({"train.lr=1e-3"}), "a ");
  EXPECT_EQ(runs({"train.lr>0.002"}), "b " + (fs::path("nested") / "c").string() + " ");
  EXPECT_EQ(runs({"model.mixer=mamba1", "test_acc>=0.5"}), "a ");
  EXPECT_EQ(runs({"model.mixer!=mamba1"}), "b ");
  EXPECT_EQ(runs({"model.d_model=32", "status=new"}), (fs::path("nested") / "c").string() + " ");  // any config key
  ssmlab::test::expect_error([&] { runs({"modle.mixer=mamba1"}); }, {"--filter 'modle.mixer=mamba1'", "no run has"});
  ssmlab::test::expect_error([&] { runs({"mamba1"}); }, {"expected key=value"});
}

TEST(Results, CsvAndSqliteHoldTheTable) {
  ssmlab::test::TempDir tmp;
  make_runs(tmp.path / "runs");
  const ResultsTable t = collect_results(tmp.path / "runs");
  ssmlab::experiments::write_csv(t, tmp.path / "r.csv");
  const std::string csv = ssmlab::read_file(tmp.path / "r.csv");
  EXPECT_EQ(csv.substr(0, csv.find('\n')), "run,status,run.name,model.mixer,train.lr,steps,test_acc,test_loss,test_acc/L32_K4");
  EXPECT_NE(csv.find("b,unfinished,\"b, quoted\",attention,0.003,20,0.5,1.5,\n"), std::string::npos) << csv;
  ssmlab::experiments::write_sqlite(t, tmp.path / "r.sqlite");
  ssmlab::experiments::write_sqlite(t, tmp.path / "r.sqlite");  // replaces, no leftovers
  for (const auto& e : fs::directory_iterator(tmp.path))
    EXPECT_EQ(e.path().string().find(".tmp"), std::string::npos) << e.path();
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2((tmp.path / "r.sqlite").c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT typeof(train_lr), typeof(steps), typeof(test_acc), run_name "
                                   "FROM runs WHERE status = 'unfinished'",
                               -1, &st, nullptr),
            SQLITE_OK)
      << sqlite3_errmsg(db);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 0)), "real");
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 1)), "integer");
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 2)), "real");
  EXPECT_STREQ(reinterpret_cast<const char*>(sqlite3_column_text(st, 3)), "b, quoted");
  EXPECT_EQ(sqlite3_step(st), SQLITE_DONE);
  sqlite3_finalize(st);
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT count(*) FROM runs", -1, &st, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(st), SQLITE_ROW);
  EXPECT_EQ(sqlite3_column_int64(st, 0), 3);
  sqlite3_finalize(st);
  sqlite3_close(db);
}

// Every text cell of `sql`'s rows, "" for NULL.
std::vector<std::vector<std::string>> query(const fs::path& file, const std::string& sql) {
  sqlite3* db = nullptr;
  std::vector<std::vector<std::string>> out;
  EXPECT_EQ(sqlite3_open_v2(file.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK) {
    ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db);
    sqlite3_close(db);
    return out;
  }
  while (sqlite3_step(st) == SQLITE_ROW) {
    out.emplace_back();
    for (int c = 0; c < sqlite3_column_count(st); ++c) {
      const auto* t = reinterpret_cast<const char*>(sqlite3_column_text(st, c));
      out.back().push_back(t ? t : "");
    }
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return out;
}

TEST(Results, SqliteColumnNamesNeedNoQuoting) {
  EXPECT_EQ(ssmlab::experiments::sqlite_columns({"run", "status", "model.mixer", "test_acc/L32_K4",
                                                 "task.mqar.train[0].seq_len", "order", "a.b", "a_b", "A.B", "3d", "x_"}),
            (std::vector<std::string>{"run", "status", "model_mixer", "test_acc_L32_K4", "task_mqar_train_0_seq_len",
                                      "order_", "a_b", "a_b_2", "A_B_3", "c_3d", "x_"}));
  ssmlab::test::TempDir tmp;
  make_runs(tmp.path / "runs");
  const ResultsTable t = collect_results(tmp.path / "runs");
  const fs::path db = tmp.path / "r.sqlite";
  ssmlab::experiments::write_sqlite(t, db);
  // Unquoted names in a query; the CSV header keeps the dotted keys, and column_kinds maps one to the other.
  EXPECT_EQ(query(db, "SELECT run, model_mixer, train_lr, test_acc_L32_K4 FROM runs WHERE run = 'a'"),
            (std::vector<std::vector<std::string>>{{"a", "mamba1", "0.001", "0.75"}}));
  EXPECT_EQ(query(db, "SELECT name, kind, key FROM column_kinds WHERE key LIKE '%.%' OR key LIKE '%/%' ORDER BY rowid"),
            (std::vector<std::vector<std::string>>{{"run_name", "config", "run.name"},
                                                   {"model_mixer", "config", "model.mixer"},
                                                   {"train_lr", "config", "train.lr"},
                                                   {"test_acc_L32_K4", "metric", "test_acc/L32_K4"}}));
}

// results.json (true / false), results.csv and results.sqlite spell a boolean the same way: true / false.
TEST(Results, BooleansReadTheSameInCsvSqliteAndJson) {
  ssmlab::test::TempDir tmp;
  const fs::path runs = tmp.path / "runs";
  for (const bool stopped : {true, false}) {
    const std::string name = stopped ? "stopped" : "full";
    write(runs / name / "config.toml", "[run]\nname = \"" + name + "\"\n[train]\ntensorboard = " +
                                           (stopped ? "false" : "true") + "\n");
    write(runs / name / "results.json",
          std::string(R"({"steps": 10, "test_acc": 0.5, "early_stopped": )") + (stopped ? "true" : "false") + "}");
    write(runs / name / "DONE", "");
  }
  const ResultsTable t = collect_results(runs);
  ssmlab::experiments::write_csv(t, tmp.path / "r.csv");
  ssmlab::experiments::write_sqlite(t, tmp.path / "r.sqlite");
  const std::string csv = ssmlab::read_file(tmp.path / "r.csv");
  EXPECT_EQ(csv.substr(0, csv.find('\n')), "run,status,run.name,train.tensorboard,steps,test_acc,early_stopped");
  const auto rows = query(tmp.path / "r.sqlite",
                          "SELECT run, train_tensorboard, early_stopped, typeof(early_stopped) FROM runs ORDER BY run");
  ASSERT_EQ(rows.size(), 2u);
  for (const auto& row : rows) {
    const std::string json_text =
        nlohmann::json::parse(ssmlab::read_file(runs / row[0] / "results.json"))["early_stopped"].dump();
    EXPECT_EQ(row[2], json_text) << row[0];  // SQLite = JSON
    EXPECT_EQ(row[3], "text");
    EXPECT_EQ(row[1], json_text == "true" ? "false" : "true");  // a boolean config key too
    // CSV = JSON: the run's line ends with its early_stopped cell.
    const std::string line = row[0] + ",done," + row[0] + "," + row[1] + ",10,0.5," + json_text + "\n";
    EXPECT_NE(csv.find(line), std::string::npos) << csv;
  }
  EXPECT_EQ(query(tmp.path / "r.sqlite", "SELECT run FROM runs WHERE early_stopped = 'true'"),
            (std::vector<std::vector<std::string>>{{"stopped"}}));
}

TEST(Results, ErrorsNameTheFolder) {
  ssmlab::test::TempDir tmp;
  ssmlab::test::expect_error([&] { collect_results(tmp.path); }, {"no run folder", tmp.path.string()});
  ssmlab::test::expect_error([&] { collect_results(tmp.path / "missing"); }, {"is not a directory"});
}

}  // namespace

}  // namespace experiments_test_results
