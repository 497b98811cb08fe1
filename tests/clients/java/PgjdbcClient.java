// pgjdbc (Debian libpostgresql-jdbc-java) with the settings docs/clients.md
// gives: sslmode=verify-full, sslrootcert (PEM), sslcert (PEM) and sslkey as
// DER PKCS#8 (`certgate ca issue --pk8`), pgjdbc's default sslfactory
// (LibPQFactory). pgjdbc verifies the name in the URL and connects to what
// that name resolves to: the test runs this with -Djdk.net.hosts.file
// mapping the names to the loopback addresses. Run as a single-file program:
//   java -Djdk.net.hosts.file=HOSTS -cp /usr/share/java/postgresql.jar PgjdbcClient.java
// Speaks the line protocol of tests/clients/README.md.

import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.URLDecoder;
import java.nio.charset.StandardCharsets;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;

public class PgjdbcClient {
    static final BufferedReader IN =
        new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));

    static Connection connect(Map<String, String> c) throws SQLException {
        String url = "jdbc:postgresql://" + c.get("host") + ":" + c.get("port") + "/"
            + c.get("dbname");
        Properties p = new Properties();
        p.setProperty("user", c.get("user"));
        p.setProperty("sslmode", "verify-full");
        p.setProperty("sslrootcert", c.get("rootcert"));
        p.setProperty("sslcert", c.get("cert"));
        p.setProperty("sslkey", c.get("pk8"));
        p.setProperty("connectTimeout", "10");
        return DriverManager.getConnection(url, p);
    }

    static List<List<String>> query(Map<String, String> c, String sql) throws SQLException {
        try (Connection conn = connect(c); Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery(sql)) {
            List<List<String>> rows = new ArrayList<>();
            int n = rs.getMetaData().getColumnCount();
            while (rs.next()) {
                List<String> row = new ArrayList<>();
                for (int i = 1; i <= n; i++)
                    row.add(rs.getString(i));
                rows.add(row);
            }
            return rows;
        }
    }

    static void cancel(Map<String, String> c, String sql) throws Exception {
        try (Connection conn = connect(c); Statement st = conn.createStatement()) {
            SQLException[] failure = new SQLException[1];
            Thread worker = new Thread(() -> {
                try {
                    st.execute(sql);
                } catch (SQLException e) {
                    failure[0] = e;
                }
            });
            worker.start();
            reply("{\"running\":true}");
            String go = IN.readLine();
            if (!"go".equals(go))
                throw new IllegalStateException("expected go, got " + go);
            st.cancel(); // a CancelRequest on a new connection, in clear
            worker.join(60000);
            if (failure[0] != null)
                throw failure[0];
        }
    }

    static String json(String s) {
        if (s == null)
            return "null";
        StringBuilder b = new StringBuilder("\"");
        for (char ch : s.toCharArray()) {
            if (ch == '"' || ch == '\\')
                b.append('\\').append(ch);
            else if (ch < 0x20)
                b.append(String.format("\\u%04x", (int) ch));
            else
                b.append(ch);
        }
        return b.append('"').toString();
    }

    static void reply(String line) {
        System.out.println(line);
        System.out.flush();
    }

    static Map<String, String> parse(String line) {
        Map<String, String> m = new HashMap<>();
        for (String part : line.split("&")) {
            int eq = part.indexOf('=');
            String k = eq < 0 ? part : part.substring(0, eq);
            String v = eq < 0 ? "" : part.substring(eq + 1);
            m.put(URLDecoder.decode(k, StandardCharsets.UTF_8),
                  URLDecoder.decode(v, StandardCharsets.UTF_8));
        }
        return m;
    }

    public static void main(String[] args) throws Exception {
        String line;
        while ((line = IN.readLine()) != null) {
            if (line.isBlank())
                continue;
            Map<String, String> c = parse(line.trim());
            try {
                List<List<String>> rows = new ArrayList<>();
                if ("query".equals(c.get("op")))
                    rows = query(c, c.get("sql"));
                else if ("cancel".equals(c.get("op")))
                    cancel(c, c.get("sql"));
                else
                    throw new IllegalArgumentException("unknown op " + c.get("op"));
                StringBuilder b = new StringBuilder("{\"ok\":true,\"rows\":[");
                for (int i = 0; i < rows.size(); i++) {
                    b.append(i > 0 ? "," : "").append("[");
                    for (int j = 0; j < rows.get(i).size(); j++)
                        b.append(j > 0 ? "," : "").append(json(rows.get(i).get(j)));
                    b.append("]");
                }
                reply(b.append("]}").toString());
            } catch (Exception e) {
                String state = e instanceof SQLException ? ((SQLException) e).getSQLState() : null;
                reply("{\"ok\":false,\"type\":" + json(e.getClass().getName()) + ",\"error\":"
                      + json(e.getMessage()) + ",\"sqlstate\":" + json(state) + "}");
            }
        }
    }
}
